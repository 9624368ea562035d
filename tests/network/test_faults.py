"""Real processes, real SIGKILLs: the server restarts from its checkpoint, a dead client is
dropped, and the run still completes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import tokens_for

ENTRY = "from fedloom.cli import main; main()"


def _spawn(args: list[str], log: Path, token: str | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if token is not None:
        env["FEDLOOM_TOKEN"] = token
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", ENTRY, *args], stdout=out, stderr=out, env=env
        )


def _wait(condition, timeout: float, what: str, procs=()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        for proc in procs:
            assert proc.poll() is None, f"process exited with {proc.returncode} while {what}"
        time.sleep(0.05)
    raise AssertionError(f"timed out: {what}")


def _checkpoint_round(run: Path) -> int:
    try:
        return int(json.loads((run / "checkpoint" / "state.json").read_text())["round"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_server_and_client_killed_with_sigkill_run_completes(tmp_path):
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps(tokens_for(2)))
    run, port_file = tmp_path / "run", tmp_path / "address"
    common = [
        "model.name=logreg", "clients.num=2", "clients.per_round=2", "rounds=4",
        "train.local_epochs=1", "seed=3", f"output_dir={run}", f"network.tokens_file={tokens}",
        "network.round_deadline_s=3", "network.poll_s=1", "network.linger_s=2",
        "network.reconnect_max_s=0.3", "network.give_up_s=120", "network.wait_for_clients=2",
        f"network.port_file={port_file}",
    ]  # fmt: skip
    server = _spawn(["server", *common, "network.address=127.0.0.1:0"], tmp_path / "server.log")
    procs = []
    try:
        _wait(port_file.exists, 120, "the server starts", [server])
        address = port_file.read_text().strip()
        procs = [
            _spawn(["client", "--server", address, "--partition", str(k), *common],
                   tmp_path / f"client-{k}.log", tokens_for(2)[str(k)])
            for k in (0, 1)
        ]  # fmt: skip
        _wait(lambda: _checkpoint_round(run) >= 1, 120, "round 1 ends", [server, *procs])
        server.send_signal(signal.SIGKILL)
        server.wait()
        killed_after = _checkpoint_round(run)
        port_file.unlink()
        server = _spawn(["server", *common, f"network.address={address}"], tmp_path / "server.log")
        _wait(lambda: _checkpoint_round(run) >= 2, 120, "round 2 ends", [server, *procs])
        procs[1].send_signal(signal.SIGKILL)
        assert server.wait(timeout=120) == 0
        assert procs[0].wait(timeout=30) == 0
    finally:
        for proc in [server, *procs]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    log = (tmp_path / "server.log").read_text()
    assert f"after round {killed_after}" in log
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in metrics] == [1, 2, 3, 4]
    # both clients reconnected to the restarted server; the killed one is dropped later
    assert metrics[killed_after]["num_clients"] == 2
    assert metrics[-1]["num_clients"] == 1 and metrics[-1]["num_failed"] == 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds"] == 4 and summary["final_test_accuracy"] > 0.8
