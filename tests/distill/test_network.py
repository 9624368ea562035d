"""FedDF and FedMD over gRPC: each client process trains its own architecture (FedDF:
the server keeps one model per architecture) and the run ends where the simulation ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedloom.config import load_config
from fedloom.experiment import Experiment

from ..network.conftest import ThreadedServer, Turns, network_overrides, start_clients, tokens_for

TWO_ARCHS = [
    "model.name=logreg",
    "clients.models=[{model: logreg, clients: [0, 2]}, {model: mlp_2nn, clients: [1]}]",
    "clients.num=3",
    "clients.per_round=3",
    "rounds=2",
    "train.local_epochs=1",
    "train.batch_size=16",
    "distill.steps=10",
    "distill.check_every=5",
    "seed=7",
]


@pytest.mark.parametrize("strategy", ["feddf", "fedmd"])
def test_two_architectures_over_grpc_match_the_simulation(tmp_path: Path, strategy: str) -> None:
    config = [f"strategy.name={strategy}", *TWO_ARCHS]
    simulated = Experiment(load_config(None, [*config, f"output_dir={tmp_path / 'sim'}"])).run()

    overrides = [*config, *network_overrides(tmp_path, 3), f"output_dir={tmp_path / 'net'}"]
    server = ThreadedServer(overrides)
    tokens = tokens_for(3)
    turns = Turns(["0", "1", "2"])  # the simulation's order: the ensemble sums agree exactly
    clients = start_clients(
        overrides, server.address, [0, 1, 2], lambda k: tokens[str(k)], turns=turns
    )
    networked = server.join(timeout=300)
    for thread in clients:
        thread.join(timeout=10)
        assert not thread.is_alive(), "a client did not hear that the run is done"

    net, sim = networked.metrics, simulated.metrics
    # every update was accepted, the mlp_2nn one checked against mlp_2nn's shapes
    assert [m["num_clients"] for m in net] == [3, 3]
    assert [m["num_rejected"] for m in net] == [0, 0]
    assert [m["bytes_up"] for m in net] == [m["bytes_up"] for m in sim]
    assert net[-1]["test_accuracy"] == sim[-1]["test_accuracy"]
    if strategy == "feddf":
        assert net[-1]["test_accuracy_by_model"] == sim[-1]["test_accuracy_by_model"]
        assert net[-1]["distill"] == sim[-1]["distill"]
        assert net[-1]["test_accuracy_by_model"]["mlp_2nn"] > 0.5
    else:  # each client process keeps its own model; they report on the test split
        assert net[-1]["client_accuracy_min"] == sim[-1]["client_accuracy_min"]
        assert net[-1]["client_accuracy_mean"] > 0.3
