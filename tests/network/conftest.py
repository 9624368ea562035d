"""Shared pieces of the network tests: tokens, a server in a thread, clients in threads.

Everything talks real gRPC over 127.0.0.1 with an OS-assigned port.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from fedloom.config import load_config
from fedloom.core.message import Message
from fedloom.experiment import RunResult
from fedloom.network.client import Participant, client_settings, local_client, run_client
from fedloom.network.server import serve, server_experiment
from fedloom.transport.grpc_client import GrpcClientChannel
from fedloom.transport.grpc_server import GrpcServerTransport

SMALL = [
    "model.name=logreg",
    "clients.num=3",
    "clients.per_round=3",
    "rounds=3",
    "train.local_epochs=1",
    "train.batch_size=16",
    "seed=7",
]


def tokens_for(n: int) -> dict[str, str]:
    return {str(k): f"secret-token-of-client-{k:04d}" for k in range(n)}


def network_overrides(tmp_path: Path, n: int, deadline_s: float = 30.0) -> list[str]:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(tokens_for(n)))
    return [
        f"network.tokens_file={path}",
        "network.address=127.0.0.1:0",
        f"network.round_deadline_s={deadline_s}",
        "network.poll_s=1",
        "network.linger_s=1.5",
        "network.reconnect_max_s=0.5",
    ]


class ThreadedServer:
    """``fedloom server`` run in a background thread of the test process."""

    def __init__(self, overrides: list[str]) -> None:
        self.experiment = server_experiment(None, overrides)
        self.transport = self.experiment.server.transport
        assert isinstance(self.transport, GrpcServerTransport)
        self.port = self.transport.start()
        self.address = f"127.0.0.1:{self.port}"
        self.result: RunResult | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = serve(self.experiment)
        except BaseException as error:  # surfaced by join()
            self.error = error

    def join(self, timeout: float) -> RunResult:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "server did not finish in time"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class Gate:
    """Holds a client's fits for rounds above the opened one until the test opens them.

    A held round cannot end before its deadline, so a test that kills or restarts a
    process does it in a state it has seen (this round open, the one before checkpointed),
    never on timing luck."""

    def __init__(self, opened: int = 0) -> None:
        self._cond = threading.Condition()
        self._opened = opened
        self._holding: int | None = None

    def open(self, rnd: int) -> None:
        """Let fits of rounds up to ``rnd`` through."""
        with self._cond:
            self._opened = rnd
            self._cond.notify_all()

    def wait_holding(self, rnd: int, timeout: float = 120.0) -> None:
        """Return once a fit of round ``rnd`` waits here."""
        with self._cond:
            held = self._cond.wait_for(lambda: self._holding == rnd, timeout)
        assert held, f"no fit of round {rnd} reached the gate"

    def pass_fit(self, message: Message) -> None:
        with self._cond:
            if message.round > self._opened:
                self._holding = message.round
                self._cond.notify_all()
                self._cond.wait_for(lambda: message.round <= self._opened)
                self._holding = None


class Turns:
    """Clients answer each round one after another in ``order`` (training and upload), so
    updates reach the server in the simulation's order and float sums match bit for bit."""

    def __init__(self, order: list[str]) -> None:
        self._cond = threading.Condition()
        self._order = order
        self._answered: dict[int, int] = {}

    def wait_turn(self, cid: str, rnd: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._answered.get(rnd, 0) == self._order.index(cid))

    def answered(self, rnd: int) -> None:
        with self._cond:
            self._answered[rnd] = self._answered.get(rnd, 0) + 1
            self._cond.notify_all()


def start_clients(
    overrides: list[str],
    address: str,
    ids: list[int],
    token: Callable[[int], str],
    *,
    gates: Mapping[int, Gate] | None = None,
    turns: Turns | None = None,
) -> list[threading.Thread]:
    """Honest clients in threads; a lock keeps their (global) torch RNG use deterministic.

    ``gates`` hold chosen clients' fits until the test opens their rounds; ``turns`` makes
    the clients answer every round in a fixed order."""
    config = load_config(None, overrides)
    lock = threading.Lock()
    threads = []
    for k in ids:
        client = local_client(config, k)
        channel = GrpcClientChannel(client_settings(config, address, str(k), token(k)))
        _instrument(client, channel, lock, (gates or {}).get(k), turns)
        thread = threading.Thread(target=run_client, args=(client, channel, config), daemon=True)
        thread.start()
        threads.append(thread)
    return threads


def _instrument(
    client: Participant,
    channel: GrpcClientChannel,
    lock: threading.Lock,
    gate: Gate | None,
    turns: Turns | None,
) -> None:
    handle, push = client.handle, channel.push

    def fit(message: Message) -> Message:
        if gate is not None:
            gate.pass_fit(message)
        if turns is not None:
            turns.wait_turn(client.client_id, message.round)
        with lock:
            return handle(message)

    def upload(message: Message) -> tuple[bool, str]:
        accepted, reason = push(message)
        if accepted and turns is not None:  # a refused or failed upload is answered again
            turns.answered(message.round)
        return accepted, reason

    client.handle = fit  # type: ignore[method-assign]
    channel.push = upload  # type: ignore[method-assign]


@pytest.fixture
def small() -> list[str]:
    return list(SMALL)
