"""Drive a SecAgg+ round stage by stage, so tests can intercept any message."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedloom.secure import messages
from fedloom.secure.client import SecAggClient
from fedloom.secure.server import SecAggServer

SEED = bytes(range(32))  # a fixed graph seed, so tests know the graph


@dataclass
class Round:
    """A server and its clients; each method runs one stage for everyone still present."""

    server: SecAggServer
    clients: dict[int, SecAggClient]
    inputs: dict[int, np.ndarray]
    sent: dict[str, dict[int, object]] = field(default_factory=dict)

    def advertise(self, silent: Sequence[int] = ()) -> dict[int, messages.KeyDirectory]:
        for u, c in self.clients.items():
            if u not in silent:
                self.server.receive(u, c.advertise())
        return self.server.close_advertise()

    def share(
        self, directories: Mapping[int, messages.KeyDirectory], silent: Sequence[int] = ()
    ) -> dict[int, messages.ForwardedShares]:
        self.sent["share"] = {}
        for u, d in directories.items():
            if u not in silent:
                reply = self.clients[u].share_keys(d)
                self.sent["share"][u] = reply
                self.server.receive(u, reply)
        return self.server.close_shares()

    def mask(
        self, forwarded: Mapping[int, messages.ForwardedShares], silent: Sequence[int] = ()
    ) -> dict[int, messages.UnmaskRequest]:
        self.sent["mask"] = {}
        for u, f in forwarded.items():
            if u not in silent:
                reply = self.clients[u].masked_input(f, self.inputs[u])
                self.sent["mask"][u] = reply
                self.server.receive(u, reply)
        return self.server.close_masked()

    def unmask(
        self, requests: Mapping[int, messages.UnmaskRequest], silent: Sequence[int] = ()
    ) -> None:
        for u, r in requests.items():
            if u not in silent:
                self.server.receive(u, self.clients[u].unmask(r))


def make_round(
    ids: Sequence[int],
    length: int,
    bits: int,
    rng: np.random.Generator,
    neighbors: int | None = None,
    threshold: int | None = None,
    round_id: int = 7,
) -> Round:
    server = SecAggServer(round_id, ids, length, bits, neighbors, threshold, graph_seed=SEED)
    setup = server.setup()
    clients = {u: SecAggClient(u, setup) for u in ids}
    high = 2**bits if bits < 64 else 2**64
    inputs = {u: rng.integers(0, high, length, dtype=np.uint64) for u in ids}
    return Round(server, clients, inputs)


def plain_sum(inputs: Mapping[int, np.ndarray], who: Sequence[int], bits: int) -> list[int]:
    """The exact integer sum mod 2**bits, in Python integers (no wraparound shortcuts)."""
    length = len(next(iter(inputs.values())))
    return [sum(int(inputs[u][i]) for u in who) % 2**bits for i in range(length)]
