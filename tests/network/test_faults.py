"""Real processes, real SIGKILLs: the server restarts from its checkpoint, a dead client is
dropped, and the run still completes. Every kill acts on a state the test has observed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from fedloom.config import load_config
from fedloom.experiment import Experiment
from fedloom.network.server import server_experiment

from ..processes import exit_code, sigkill, spawn_cli, wait_until
from .conftest import Gate, network_overrides, start_clients, tokens_for


def _checkpoint_round(run: Path) -> int:
    try:
        return int(json.loads((run / "checkpoint" / "state.json").read_text())["round"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_server_and_client_killed_with_sigkill_run_completes(tmp_path):
    """Client 0 runs in this process behind a gate, so every kill lands while a known round
    is held open; the server and client 1 are real processes, killed with SIGKILL.

    Round 1: both answer. The server is killed while round 2 is held; its restart resumes
    after round 1 and both clients reconnect. Client 1 and the server are killed while
    round 3 is held; the second restart waits for client 1 only ``resume_wait_s``, goes on
    with client 0, and drops client 1 at round 3's deadline. The first two servers' round
    deadline is long, so a held round stays open until the test has acted."""
    tokens = tokens_for(2)
    (tmp_path / "tokens.json").write_text(json.dumps(tokens))
    run, port_file = tmp_path / "run", tmp_path / "address"
    common = [
        "model.name=logreg", "clients.num=2", "clients.per_round=2", "rounds=3",
        "train.local_epochs=1", "seed=3", f"output_dir={run}",
        f"network.tokens_file={tmp_path / 'tokens.json'}",
        "network.poll_s=1", "network.linger_s=2",
        "network.reconnect_max_s=0.3", "network.give_up_s=120", "network.wait_for_clients=2",
        "network.resume_wait_s=1", f"network.port_file={port_file}",
    ]  # fmt: skip
    # a held round stays open until its deadline: far longer than a kill takes to land;
    # the last server's short one is the wait for the dead client
    held, last = ["network.round_deadline_s=120"], ["network.round_deadline_s=10"]
    server_log = tmp_path / "server.log"
    server = spawn_cli(["server", *common, *held, "network.address=127.0.0.1:0"], server_log)
    client1: subprocess.Popen[bytes] | None = None
    try:
        wait_until(port_file.exists, 120, "the server starts", [server])
        address = port_file.read_text().strip()
        gate = Gate(opened=1)
        (client0,) = start_clients(common, address, [0], lambda k: tokens[str(k)],
                                   gates={0: gate})  # fmt: skip
        client1 = spawn_cli(["client", "--server", address, "--partition", "1", *common],
                         tmp_path / "client-1.log", FEDLOOM_TOKEN=tokens["1"])  # fmt: skip

        gate.wait_holding(2)  # round 1 is checkpointed, round 2 is open
        assert _checkpoint_round(run) == 1
        server = _restart(server, [*common, *held], address, port_file, server_log)
        gate.open(2)

        gate.wait_holding(3)  # round 2 is checkpointed, round 3 is open
        assert _checkpoint_round(run) == 2
        sigkill(client1)
        server = _restart(server, [*common, *last], address, port_file, server_log)
        gate.open(3)

        assert exit_code(server, 120, server_log) == 0
        client0.join(timeout=30)
        assert not client0.is_alive(), "client 0 did not hear that the run is done"
    finally:
        for proc in (server, client1):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    log = server_log.read_text()
    assert "after round 1" in log and "after round 2" in log
    assert "resuming with 1 of 2 clients connected" in log
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in metrics] == [1, 2, 3]
    # both clients reconnected to the first restart; the second went on without client 1
    assert [m["num_clients"] for m in metrics] == [2, 2, 1]
    assert [m["num_failed"] for m in metrics] == [0, 0, 1]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds"] == 3 and summary["final_test_accuracy"] > 0.8


def _restart(
    server: subprocess.Popen[bytes], common: list[str], address: str, port_file: Path, log: Path
) -> subprocess.Popen[bytes]:
    """SIGKILL the server, start it again on the same address, return once it serves."""
    sigkill(server)
    port_file.unlink()
    server = spawn_cli(["server", *common, f"network.address={address}"], log)
    wait_until(port_file.exists, 120, "the server restarts", [server])
    return server


def test_a_server_killed_while_writing_its_first_checkpoint_starts_over(tmp_path, small):
    run = tmp_path / "run"
    overrides = [*small, "rounds=1", *network_overrides(tmp_path, 3), f"output_dir={run}"]
    Experiment(load_config(None, overrides)).run()  # a simulated round 1 lays out the run
    # killed between the tensors and the state file of its first checkpoint
    (run / "checkpoint" / "state.json").unlink()
    experiment = server_experiment(None, overrides)
    assert experiment.server.round == 0
    assert (run / "metrics.jsonl").read_text() == ""  # round 1 is run again, not logged twice
