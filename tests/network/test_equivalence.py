"""A federation over gRPC ends exactly where the simulation with the same seed ends."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from fedloom.config import load_config
from fedloom.experiment import Experiment

from .conftest import ThreadedServer, Turns, network_overrides, start_clients, tokens_for


def test_three_clients_over_grpc_match_the_simulation(tmp_path, small):
    simulated = Experiment(load_config(None, [*small, f"output_dir={tmp_path / 'sim'}"])).run()

    overrides = [*small, *network_overrides(tmp_path, 3), f"output_dir={tmp_path / 'net'}"]
    server = ThreadedServer(overrides)
    tokens = tokens_for(3)
    # updates arrive in the simulation's order (ascending ids), so even float sums agree
    turns = Turns(["0", "1", "2"])
    clients = start_clients(
        overrides, server.address, [0, 1, 2], lambda k: tokens[str(k)], turns=turns
    )
    networked = server.join(timeout=120)
    for thread in clients:
        thread.join(timeout=10)
        assert not thread.is_alive(), "a client did not hear that the run is done"

    sim_acc = simulated.summary["final_test_accuracy"]
    net_acc = networked.summary["final_test_accuracy"]
    assert sim_acc > 0.85
    assert net_acc == sim_acc
    assert networked.summary["rounds"] == 3
    # same run directory layout and metrics as a simulated run
    assert {p.name for p in simulated.run_dir.iterdir()} <= {
        p.name for p in networked.run_dir.iterdir()
    }
    lines = [json.loads(x) for x in (networked.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["num_clients"] for m in lines] == [3, 3, 3]
    assert [m["num_failed"] for m in lines] == [0, 0, 0]
    sim_w = load_file(simulated.run_dir / "model.safetensors")
    net_w = load_file(networked.run_dir / "model.safetensors")
    assert sim_w.keys() == net_w.keys()
    for name in sim_w:
        assert torch.equal(net_w[name], sim_w[name]), name
    # the update bytes are the same frames in both worlds
    sim_lines = [
        json.loads(x) for x in (simulated.run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert [m["bytes_down"] for m in lines] == [m["bytes_down"] for m in sim_lines]
