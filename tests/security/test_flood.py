"""A flood of unauthenticated, half-open calls cannot lock honest clients out.

Each flood call sits on a connection of its own, claims a bad identity, and never sends
its request (its request iterator blocks until the test ends). gRPC reads a unary request
before any handler runs, so before the token was checked in an interceptor each half-open
``Pull`` held a worker thread and a slot of ``maximum_concurrent_rpcs``: 100 of them left
honest clients RESOURCE_EXHAUSTED. Now every one is refused UNAUTHENTICATED unread, the
refusals are logged a few times per host (with the running count), and a real run with
all four clients completes while the flood connections stay open.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import grpc

from fedloom.transport.grpc_common import CLIENT_KEY, PULL, PUSH, TOKEN_KEY, identity
from fedloom.transport.grpc_guard import RefusalLog

from ..network.conftest import SMALL, ThreadedServer, network_overrides, start_clients, tokens_for

FLOOD = 100
CLIENTS = 4


class HalfOpen:
    """One call on its own connection whose request is never sent."""

    def __init__(self, address: str, method: str, metadata: tuple[tuple[str, str], ...]) -> None:
        self.release = threading.Event()
        # a private subchannel pool: this channel shares no connection with any other
        self.channel = grpc.insecure_channel(
            address, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        call = self.channel.stream_stream(
            method, request_serializer=identity, response_deserializer=identity
        )
        self.call = call(self._never(), metadata=metadata, timeout=300)

    def _never(self) -> Iterator[bytes]:
        self.release.wait()
        return
        yield b""  # a generator that yields nothing, after the test lets it go

    def code(self) -> grpc.StatusCode:
        return self.call.code()  # blocks until the server ended the call

    def close(self) -> None:
        self.release.set()
        self.call.cancel()
        self.channel.close()


def _flood(address: str) -> list[HalfOpen]:
    identities = [
        (),  # no identity at all
        ((CLIENT_KEY, "0"), (TOKEN_KEY, "not-the-token-of-client-0")),
        ((CLIENT_KEY, "intruder"), (TOKEN_KEY, tokens_for(1)["0"])),
    ]
    return [
        HalfOpen(address, (PULL, PUSH)[k % 2], identities[k % len(identities)])
        for k in range(FLOOD)
    ]


def test_half_open_unauthenticated_flood_leaves_the_run_unharmed(tmp_path, caplog):
    overrides = [
        *SMALL,
        f"clients.num={CLIENTS}",
        f"clients.per_round={CLIENTS}",
        "rounds=2",
        *network_overrides(tmp_path, CLIENTS),
        f"output_dir={tmp_path / 'run'}",
    ]
    caplog.set_level(logging.WARNING, logger="fedloom.transport.grpc_server")
    server = ThreadedServer(overrides)
    assert server.transport.settings.max_workers < FLOOD  # the flood alone would fill the pool
    # uploads are bounded by the model (a 64x10 logistic regression), not by 4 GiB
    assert server.transport.upload_limit == server.experiment.server.spec.max_bytes < 80_000
    started = time.monotonic()
    flood = _flood(server.address)
    try:
        # every call is answered at once, while its request is still unsent
        assert [call.code() for call in flood] == [grpc.StatusCode.UNAUTHENTICATED] * FLOOD
        windows = 1 + int((time.monotonic() - started) // RefusalLog().window_s)
        assert server.transport.refused == FLOOD
        tokens = tokens_for(CLIENTS)
        clients = start_clients(
            overrides, server.address, list(range(CLIENTS)), lambda k: tokens[str(k)]
        )
        result = server.join(timeout=180)
        for thread in clients:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in clients)
        # the flood connections were still open (their requests unsent) through the run
        assert not any(call.release.is_set() for call in flood)
    finally:
        for call in flood:
            call.close()

    assert [(m["round"], m["num_clients"], m["num_failed"]) for m in result.metrics] == [
        (1, CLIENTS, 0),
        (2, CLIENTS, 0),
    ]
    refusals = [r.getMessage() for r in caplog.records if "bad token" in r.getMessage()]
    # logged with the peer and running counts, but at most a burst per host and window
    # (one window unless the flood took over 10 s to open): it cannot flood the log
    burst = RefusalLog().burst
    assert 1 <= len(refusals) <= burst * windows < FLOOD
    assert "refused ipv4:127.0.0.1:" in refusals[0]
    assert "1 refused from ipv4:127.0.0.1, 1 in all" in refusals[0]
    assert f"logged at most {burst} per 10 s" in refusals[burst - 1]
