"""Run one SecAgg+ round in process, every message through its wire encoding.

This drives :class:`SecAggServer` and :class:`SecAggClient` exactly as a transport
would (encode, decode, authenticated sender), with scripted dropouts, and counts the
bytes and CPU seconds of each party. Tests and the protocol benchmark use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from fedloom.secure import messages
from fedloom.secure.client import SecAggClient
from fedloom.secure.server import SecAggServer, SecureSum

T = TypeVar("T")


@dataclass(frozen=True)
class Dropouts:
    """Clients that go silent before a stage (and stay silent after it)."""

    before_advertise: frozenset[int] = frozenset()
    before_shares: frozenset[int] = frozenset()
    before_masked: frozenset[int] = frozenset()
    before_unmask: frozenset[int] = frozenset()

    def silent_at(self, stage: int) -> frozenset[int]:
        sets = (self.before_advertise, self.before_shares, self.before_masked, self.before_unmask)
        return frozenset().union(*sets[: stage + 1])


@dataclass
class Traffic:
    """Bytes and CPU seconds per party over one round."""

    up: dict[int, int] = field(default_factory=dict)
    down: dict[int, int] = field(default_factory=dict)
    client_cpu_s: dict[int, float] = field(default_factory=dict)
    server_cpu_s: float = 0.0

    def add(self, table: dict[int, int], client: int, size: int) -> None:
        table[client] = table.get(client, 0) + size


def _timed(call: Callable[[], T]) -> tuple[T, float]:
    start = time.process_time()
    result = call()
    return result, time.process_time() - start


def run_round(
    server: SecAggServer,
    inputs: Mapping[int, np.ndarray],
    dropouts: Dropouts | None = None,
) -> tuple[SecureSum, Traffic]:
    """One full round; raises :class:`SecAggAborted` when recovery is impossible."""
    drops = dropouts or Dropouts()
    traffic = Traffic()

    def to_client(u: int, message: messages.Message) -> Any:
        wire = messages.encode(message)
        traffic.add(traffic.down, u, len(wire))
        return messages.decode(wire)

    def to_server(u: int, message: messages.ClientMessage, elapsed: float) -> None:
        wire = messages.encode(message)
        traffic.add(traffic.up, u, len(wire))
        traffic.client_cpu_s[u] = traffic.client_cpu_s.get(u, 0.0) + elapsed
        decoded: Any = messages.decode(wire)
        start = time.process_time()
        server.receive(u, decoded)
        traffic.server_cpu_s += time.process_time() - start

    setup, spent = _timed(server.setup)
    traffic.server_cpu_s += spent
    clients: dict[int, SecAggClient] = {}
    for u in server.clients:
        received: messages.RoundSetup = to_client(u, setup)
        start = time.process_time()
        clients[u] = SecAggClient(u, received)
        traffic.client_cpu_s[u] = time.process_time() - start
    _stage(clients, drops.silent_at(0), lambda c, _m: c.advertise(), {}, to_server)
    directories = _close(server.close_advertise, traffic)
    _stage(
        clients, drops.silent_at(1), lambda c, m: c.share_keys(m), directories, to_server, to_client
    )
    forwarded = _close(server.close_shares, traffic)
    _stage(
        clients,
        drops.silent_at(2),
        lambda c, m: c.masked_input(m, inputs[c.id]),
        forwarded,
        to_server,
        to_client,
    )
    requests = _close(server.close_masked, traffic)
    _stage(clients, drops.silent_at(3), lambda c, m: c.unmask(m), requests, to_server, to_client)
    result, spent = _timed(server.finish)
    traffic.server_cpu_s += spent
    return result, traffic


def _close(close: Callable[[], dict[int, T]], traffic: Traffic) -> dict[int, T]:
    out, spent = _timed(close)
    traffic.server_cpu_s += spent
    return out


def _stage(
    clients: Mapping[int, SecAggClient],
    silent: Collection[int],
    act: Callable[[SecAggClient, Any], messages.ClientMessage],
    inbox: Mapping[int, messages.Message],
    to_server: Callable[[int, messages.ClientMessage, float], None],
    to_client: Callable[[int, messages.Message], Any] | None = None,
) -> None:
    for u, client in clients.items():
        if u in silent or (to_client is not None and u not in inbox):
            continue
        incoming = None if to_client is None else to_client(u, inbox[u])
        start = time.process_time()
        reply = act(client, incoming)
        to_server(u, reply, time.process_time() - start)
