"""How ``fedloom server`` stops: SIGTERM or SIGINT, an error in the run, a port in use.

"done" is only ever said when the run is over; a server that stops early answers "retry",
keeps the last completed round's checkpoint, exits non-zero with one line, and the same
command resumes. Every signal is sent in a state the test has observed (a round held open
at a gate, or the server listening)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from fedloom.config import load_config
from fedloom.core.message import Message
from fedloom.network.client import client_settings
from fedloom.network.server import serve, server_experiment
from fedloom.network.stopping import Interrupted, stop_on_signals
from fedloom.transport.grpc_client import GrpcClientChannel
from fedloom.transport.grpc_server import GrpcServerSettings, GrpcServerTransport

from ..processes import CLI, exit_code, spawn_cli, wait_until
from .conftest import SMALL, Gate, network_overrides, start_clients, tokens_for


def _watch_for(channel: GrpcClientChannel, wanted: str, seen: list[str]) -> None:
    """Poll until the server answers ``wanted``; record every answer (or failure)."""
    for _ in range(600):
        try:
            status, _ = channel.pull()
        except grpc.RpcError as error:
            seen.append(f"rpc:{error.code().name}")
            continue
        seen.append(status)
        if status == wanted:
            return


def _checkpoint_round(run: Path) -> int:
    return int(json.loads((run / "checkpoint" / "state.json").read_text())["round"])


@pytest.mark.slow
def test_sigterm_mid_round_keeps_the_checkpoint_says_retry_and_the_restart_resumes(tmp_path):
    tokens = tokens_for(1)
    run, port_file, log = tmp_path / "run", tmp_path / "address", tmp_path / "server.log"
    common = [*SMALL, "clients.num=1", "clients.per_round=1", *network_overrides(tmp_path, 1),
              f"output_dir={run}", f"network.port_file={port_file}", "network.give_up_s=120",
              "network.round_deadline_s=120", "network.linger_s=3"]  # fmt: skip
    server = spawn_cli(["server", *common], log)
    try:
        wait_until(port_file.exists, 120, "the server starts", [server])
        address = port_file.read_text().strip()
        gate = Gate(opened=1)
        (client,) = start_clients(common, address, [0], lambda k: tokens[str(k)],
                                  gates={0: gate})  # fmt: skip
        gate.wait_holding(2)  # round 1 is checkpointed, round 2 is open
        config = load_config(None, common)
        observer = GrpcClientChannel(client_settings(config, address, "0", tokens["0"]))
        seen: list[str] = []
        watcher = threading.Thread(target=_watch_for, args=(observer, "retry", seen))
        watcher.start()
        wait_until(lambda: "fit" in seen, 60, "the observer sees round 2 open", [server])

        server.send_signal(signal.SIGTERM)
        assert exit_code(server, 60, log) == 128 + signal.SIGTERM
        watcher.join(timeout=60)
        observer.close()
        assert seen[-1] == "retry" and "done" not in seen, seen
        text = log.read_text()
        assert "error: stopped by SIGTERM after round 1; clients were told to retry" in text
        assert "Traceback" not in text
        assert _checkpoint_round(run) == 1
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 1

        port_file.unlink()
        server = spawn_cli(["server", *common, f"network.address={address}"], log)
        wait_until(port_file.exists, 120, "the server restarts", [server])
        gate.open(3)  # the client, still polling, answers the restarted server
        assert exit_code(server, 180, log) == 0
        client.join(timeout=60)
        assert not client.is_alive(), "the client did not hear that the run is done"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert "resumed" in log.read_text() and "after round 1" in log.read_text()
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in metrics] == [1, 2, 3]


@pytest.mark.slow
def test_sigint_while_waiting_for_clients_exits_130_and_a_port_in_use_is_one_line(tmp_path):
    run, port_file = tmp_path / "run", tmp_path / "address"
    common = [*SMALL, *network_overrides(tmp_path, 3), f"output_dir={run}"]
    log = tmp_path / "server.log"
    server = spawn_cli(["server", *common, f"network.port_file={port_file}"], log)
    try:
        wait_until(port_file.exists, 120, "the server listens", [server])
        address = port_file.read_text().strip()
        # a second server on the same port: one line, no traceback, non-zero
        clash = subprocess.run(
            [sys.executable, "-c", CLI, "server", *common, f"network.address={address}",
             f"output_dir={tmp_path / 'other'}"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        server.send_signal(signal.SIGINT)  # it is still waiting for its clients
        assert exit_code(server, 60, log) == 128 + signal.SIGINT
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert clash.returncode == 1
    errors = [line for line in clash.stderr.splitlines() if line.startswith("error")]
    assert errors == [f"error: cannot listen on {address}: address already in use"]
    assert "Traceback" not in clash.stderr
    text = log.read_text()
    assert "error: stopped by SIGINT after round 0" in text and "Traceback" not in text


def test_an_error_in_the_run_tells_the_clients_retry_not_done(tmp_path):
    overrides = [*SMALL, "clients.num=1", "clients.per_round=1", *network_overrides(tmp_path, 1)]
    overrides += [f"output_dir={tmp_path / 'run'}"]
    experiment = server_experiment(None, overrides)
    address = f"127.0.0.1:{experiment.server.transport.start()}"  # type: ignore[attr-defined]
    tokens = tokens_for(1)
    failed: list[BaseException] = []

    def broken_round_hook(metrics: dict) -> None:
        raise RuntimeError(f"the disk filled up after round {metrics['round']}")

    def run() -> None:
        try:
            serve(experiment, on_round=broken_round_hook)
        except RuntimeError as error:
            failed.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    (client,) = start_clients(overrides, address, [0], lambda k: tokens[str(k)])
    observer = GrpcClientChannel(
        client_settings(load_config(None, overrides), address, "0", tokens["0"])
    )
    seen: list[str] = []
    _watch_for(observer, "retry", seen)
    thread.join(timeout=60)
    observer.close()
    assert seen[-1] == "retry" and "done" not in seen, seen
    assert [str(e) for e in failed] == ["the disk filled up after round 1"]
    assert client.is_alive()  # it keeps polling for a restarted server (until give_up_s)


def test_port_in_use_is_a_fedloom_error_naming_the_address(tmp_path):
    from fedloom.core.errors import FedloomError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        overrides = [*SMALL, *network_overrides(tmp_path, 3), f"output_dir={tmp_path / 'r'}"]
        experiment = server_experiment(None, [*overrides, f"network.address=127.0.0.1:{port}"])
        with pytest.raises(FedloomError) as refused:
            serve(experiment)
    assert str(refused.value) == f"cannot listen on 127.0.0.1:{port}: address already in use"


class _Scripted:
    """A channel whose polls answer from a script (then "retry" for ever)."""

    def __init__(self, answers: list[str]) -> None:
        self.answers, self.polls = list(answers), 0

    def pull(self) -> tuple[str, None]:
        self.polls += 1
        return (self.answers.pop(0) if self.answers else "retry"), None


def test_a_client_told_retry_keeps_polling_until_done_or_give_up():
    from fedloom.core.errors import FedloomError
    from fedloom.network.client import run_client

    patient = load_config(None, ["network.reconnect_max_s=0.01", "network.give_up_s=600"])
    channel = _Scripted(["idle", "retry", "retry", "retry", "idle", "done"])
    assert run_client(None, channel, patient) == 0  # type: ignore[arg-type]
    assert channel.polls == 6
    brief = load_config(None, ["network.reconnect_max_s=0.01", "network.give_up_s=0.05"])
    forever = _Scripted(["idle"])
    with pytest.raises(FedloomError, match="server unavailable for 0.05 s"):
        run_client(None, forever, brief)  # type: ignore[arg-type]
    assert forever.polls > 3  # it polled again and again before giving up


def _signal_this_thread_soon(sig: signal.Signals) -> None:
    """Deliver ``sig`` to a thread other than the main one, as the OS may do with a
    signal sent to the process while gRPC's threads run."""

    def send() -> None:
        time.sleep(0.3)
        signal.pthread_kill(threading.get_ident(), sig)

    threading.Thread(target=send, daemon=True).start()


def test_a_signal_that_lands_on_another_thread_stops_the_waits_before_their_deadlines():
    tokens = {"0": "token-for-the-only-client-0"}
    settings = GrpcServerSettings("127.0.0.1:0", tokens, deadline_s=60.0, poll_s=0.2,
                                  wait_for_clients=1, startup_timeout_s=60.0)  # fmt: skip
    transport = GrpcServerTransport(settings)
    transport.start()
    try:
        for wait in (
            lambda: transport.await_clients(resumed=False),  # no client ever comes
            lambda: list(transport.exchange({"0": Message("fit", 1, "server", b"x", {})})),
        ):
            started = time.monotonic()
            with stop_on_signals(), pytest.raises(Interrupted):
                _signal_this_thread_soon(signal.SIGTERM)
                wait()
            # the main thread woke and ran the handler: the 60 s wait did not run out first
            assert time.monotonic() - started < settings.deadline_s / 2
    finally:
        transport.finish(linger_s=0)
