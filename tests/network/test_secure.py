"""``secure.mode=secagg`` over gRPC: the stages travel as ``secagg`` / ``secagg_result``
messages through the same authenticated channel (protocol 3), a client lost mid-round is
recovered so the sum stays exact, SIGTERM mid-stage abandons the round, and
``fedloom deploy-local 8 secure.mode=secagg`` finishes with a client SIGKILLed mid-run."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from fedloom.config import load_config
from fedloom.core.message import Message
from fedloom.experiment import Experiment
from fedloom.network.client import Participant, client_settings, local_client, run_client
from fedloom.secure import messages as wire
from fedloom.secure.round import SecureClientHandler, SecureRound
from fedloom.transport.grpc_client import GrpcClientChannel
from fedloom.transport.grpc_common import VERSION_KEY, check_protocol

from ..processes import exit_code, spawn_cli, wait_until
from .conftest import SMALL, ThreadedServer, network_overrides, start_clients, tokens_for

SECURE = ["secure.mode=secagg"]


def _overrides(tmp_path: Path, n: int, rounds: int, deadline_s: float) -> list[str]:
    return [
        *SMALL,
        f"clients.num={n}",
        f"clients.per_round={n}",
        f"rounds={rounds}",
        *SECURE,
        *network_overrides(tmp_path, n, deadline_s=deadline_s),
        f"output_dir={tmp_path / 'run'}",
    ]


def _lost_at(participant: Participant, stage: str, rnd: int) -> None:
    """``participant`` never answers ``stage`` of round ``rnd`` (its link is lost there)."""
    handle = participant.handle

    def answer(message: Message) -> Message:
        if message.round == rnd and message.meta.get("stage") == stage:
            raise ConnectionError("link lost (test)")
        return handle(message)

    participant.handle = answer


def test_secagg_over_grpc_recovers_a_client_lost_at_unmask_and_equals_the_simulation(
    tmp_path: Path,
) -> None:
    n, tokens = 4, tokens_for(4)
    overrides = _overrides(tmp_path, n, rounds=2, deadline_s=10)
    server = ThreadedServer(overrides)
    config = load_config(None, overrides)
    participants = [local_client(config, k) for k in range(n)]
    secure = [p.handle for p in participants]
    assert all(isinstance(h, SecureClientHandler) for h in secure)
    _lost_at(participants[3], wire.UNMASK, 1)
    lock = threading.Lock()  # one trains at a time: the same global RNG use as simulated
    threads = []
    for k, participant in enumerate(participants):
        inner = participant.handle

        def serial(message: Message, inner: object = inner) -> Message:
            with lock:
                return inner(message)  # type: ignore[operator]

        participant.handle = serial
        channel = GrpcClientChannel(client_settings(config, server.address, str(k), tokens[str(k)]))
        thread = threading.Thread(target=run_client, args=(participant, channel, config))
        thread.start()
        threads.append(thread)
    result = server.join(timeout=180)
    for thread in threads:
        thread.join(timeout=30)
    first, second = result.metrics
    # the masked input of client 3 is in round 1's sum: its masks came from its neighbours
    assert (first["secure_survivors"], first["secure_recovered"]) == (4, 1)
    assert first["secure_aborted"] is None and first["num_failed"] == 0
    assert second["secure_survivors"] == 4 and second["secure_recovered"] == 0
    # round 2's modular sum is the plain sum of what the clients masked, exactly
    phase = server.experiment.server.phase
    assert isinstance(phase, SecureRound) and phase.last_sum is not None
    plain = sum(h.last_input.astype(object) for h in secure) % (1 << phase.codec.bits)  # type: ignore[union-attr]
    assert np.array_equal(phase.last_sum.total, np.asarray(plain, dtype=np.uint64))
    # stage bytes are counted: keys and shares travel beyond the fit messages
    assert first["bytes_up"] > 0 and first["secure_stage_bytes_down"] > 0
    # the same federation simulated, without any loss, ends with the same weights
    simulated = Experiment(
        load_config(None, [*overrides, "network.mode=simulation", f"output_dir={tmp_path / 's'}"])
    ).run()
    for name, tensor in simulated.model.state_dict().items():
        assert torch.equal(tensor, result.model.state_dict()[name]), name


def test_a_secure_server_needs_protocol_3_a_plain_one_takes_2_and_3() -> None:
    assert check_protocol([(VERSION_KEY, "2")]) is None
    assert check_protocol([(VERSION_KEY, "3")]) is None
    assert check_protocol([(VERSION_KEY, "3")], 3) is None
    assert check_protocol([(VERSION_KEY, "2")], 3) == (
        "client speaks protocol 2, this server speaks 3 (secure aggregation needs it)"
    )
    assert check_protocol([]) == "client speaks protocol 1, this server speaks 2 or 3"


def test_ckks_over_grpc_is_refused_naming_both_keys(tmp_path: Path) -> None:
    from fedloom.core.errors import ConfigError

    pytest.importorskip("tenseal")
    with pytest.raises(ConfigError, match="secure.mode=ckks.*network.mode=grpc"):
        load_config(None, [*SMALL, "secure.mode=ckks", *network_overrides(tmp_path, 3),
                           "network.mode=grpc"])  # fmt: skip


class StageGate:
    """Holds a client's ``stage`` message of round ``rnd`` until the test opens it."""

    def __init__(self, stage: str, rnd: int) -> None:
        self.stage, self.rnd = stage, rnd
        self._cond = threading.Condition()
        self._holding = self._open = False

    def pass_fit(self, message: Message) -> None:
        if message.round != self.rnd or message.meta.get("stage") != self.stage:
            return
        with self._cond:
            self._holding = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._open)

    def wait_holding(self, timeout: float = 120.0) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self._holding, timeout), "the stage never came"

    def open(self) -> None:
        with self._cond:
            self._open = True
            self._cond.notify_all()


@pytest.mark.slow
def test_sigterm_mid_stage_abandons_the_round_and_the_restart_resumes(tmp_path: Path) -> None:
    tokens = tokens_for(2)
    run, port_file, log = tmp_path / "run", tmp_path / "address", tmp_path / "server.log"
    common = [*_overrides(tmp_path, 2, rounds=3, deadline_s=120), f"network.port_file={port_file}",
              "network.give_up_s=120", "network.linger_s=3"]  # fmt: skip
    server = spawn_cli(["server", *common], log)
    try:
        wait_until(port_file.exists, 120, "the server starts", [server])
        address = port_file.read_text().strip()
        gate = StageGate(wire.MASK, 2)  # round 2 is open, at its masked-input stage
        clients = start_clients(common, address, [0, 1], lambda k: tokens[str(k)],
                                gates={0: gate})  # type: ignore[dict-item]  # fmt: skip
        gate.wait_holding()
        server.send_signal(signal.SIGTERM)
        assert exit_code(server, 60, log) == 128 + signal.SIGTERM
        text = log.read_text()
        assert "error: stopped by SIGTERM after round 1; clients were told to retry" in text
        assert "Traceback" not in text
        state = json.loads((run / "checkpoint" / "state.json").read_text())
        assert state["round"] == 1
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 1

        port_file.unlink()
        server = spawn_cli(["server", *common, f"network.address={address}"], log)
        wait_until(port_file.exists, 120, "the server restarts", [server])
        gate.open()  # the old round's answer is refused; round 2 starts over with new keys
        assert exit_code(server, 180, log) == 0
        for client in clients:
            client.join(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in metrics] == [1, 2, 3]
    assert all(m["secure_aborted"] is None and m["secure_survivors"] == 2 for m in metrics)


def _child_with(parent: int, *words: str) -> int | None:
    """The pid of a child of ``parent`` whose command line holds ``words`` in order."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        text = [a.decode(errors="replace") for a in argv]
        spans = [text[i : i + len(words)] for i in range(len(text))]
        if ppid == parent and list(words) in spans:
            return int(entry.name)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the client process through /proc")
def test_deploy_local_8_secagg_finishes_with_a_client_killed_mid_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["deploy-local", "8", "model.name=logreg", "rounds=3", "train.local_epochs=1",
            "seed=5", *SECURE, "network.round_deadline_s=20", "network.poll_s=1",
            "network.linger_s=1", f"output_dir={run}"]  # fmt: skip
    deploy = spawn_cli(args, tmp_path / "deploy.log")
    try:
        metrics = run / "metrics.jsonl"
        wait_until(lambda: metrics.is_file() and metrics.read_text().count("\n") >= 1, 300,
                   "round 1 ends", [deploy])  # fmt: skip
        victim = _child_with(deploy.pid, "--partition", "7")
        assert victim is not None, "client 7 is not running"
        os.kill(victim, signal.SIGKILL)  # during round 2 (or just before its fit)
        assert deploy.wait(timeout=300) == 0, (tmp_path / "deploy.log").read_text()[-2000:]
    finally:
        if deploy.poll() is None:
            deploy.kill()
            deploy.wait()
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [m["round"] for m in lines] == [1, 2, 3]
    assert lines[0]["secure_survivors"] == 8
    assert all(m["secure_aborted"] is None for m in lines)
    # client 7 took part in round 2 up to wherever it died: not at all (killed before its
    # fit was answered), dropped after its keys, or in the sum (masks recovered if it died
    # before unmasking); the round's sum is always over the survivors, and it is in no
    # later round
    assert lines[1]["secure_survivors"] in (7, 8)
    assert lines[1]["secure_survivors"] + lines[1]["secure_dropped"] <= 8
    assert lines[2]["secure_survivors"] == 7 and lines[2]["num_failed"] == 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_test_accuracy"] > 0.8


def test_distributed_dp_over_grpc_reports_the_simulations_epsilon(tmp_path: Path) -> None:
    pytest.importorskip("opendp")
    n, tokens = 3, tokens_for(3)
    dp = ["privacy.mode=distributed", "privacy.noise_multiplier=0.8", "privacy.clip=1.0",
          "privacy.secure_rng=true"]  # fmt: skip
    overrides = [*_overrides(tmp_path, n, rounds=2, deadline_s=30), *dp]
    server = ThreadedServer(overrides)
    threads = start_clients(overrides, server.address, list(range(n)), lambda k: tokens[str(k)])
    result = server.join(timeout=180)
    for thread in threads:
        thread.join(timeout=30)
    assert [m["secure_survivors"] for m in result.metrics] == [3, 3]
    simulated = Experiment(
        load_config(None, [*overrides, "network.mode=simulation", f"output_dir={tmp_path / 's'}"])
    ).run()
    # the noise is the clients' own (OS randomness), the accounting the same as simulated
    assert [m["epsilon"] for m in result.metrics] == [m["epsilon"] for m in simulated.metrics]
    assert result.metrics[-1]["epsilon"] > 0
