"""Shared pieces of the network tests: tokens, a server in a thread, clients in threads.

Everything talks real gRPC over 127.0.0.1 with an OS-assigned port.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from fedloom.config import load_config
from fedloom.experiment import RunResult
from fedloom.network.client import client_settings, local_client, run_client
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


def start_clients(
    overrides: list[str], address: str, ids: list[int], token: Callable[[int], str]
) -> list[threading.Thread]:
    """Honest clients in threads; a lock keeps their (global) torch RNG use deterministic."""
    config = load_config(None, overrides)
    lock = threading.Lock()
    threads = []
    for k in ids:
        client = local_client(config, k)
        handle = client.handle

        def locked(message, handle=handle):
            with lock:
                return handle(message)

        client.handle = locked  # type: ignore[method-assign]
        channel = GrpcClientChannel(client_settings(config, address, str(k), token(k)))
        thread = threading.Thread(target=run_client, args=(client, channel, config), daemon=True)
        thread.start()
        threads.append(thread)
    return threads


@pytest.fixture
def small() -> list[str]:
    return list(SMALL)
