"""Which rank simulates which of a round's clients, and a transport that runs only its own.

Every rank samples the same clients (the sampler is seeded) and computes the same
assignment, so no message about who does what is ever sent. The assignment balances the
expected work: clients sorted by their planned local steps, heaviest first, each given to
the rank with the least work so far (greedy longest-processing-time scheduling, as pfl
does with client weights).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping, Sequence

from fedloom.core.message import Message
from fedloom.transport.base import Reply, Transport


def balanced_assignment(
    ids: Sequence[str], work: Mapping[str, float], world: int
) -> list[list[str]]:
    """``ids`` split over ``world`` ranks; each rank's list keeps the order of ``ids``.

    Heaviest first (ties: the earlier id), each to the least-loaded rank (ties: the lower
    rank). With work 5, 4, 3, 3 over 2 ranks: rank 0 gets 5 and 3, rank 1 gets 4 and 3.
    """
    if world < 1:
        raise ValueError(f"world size must be >= 1, got {world}")
    position = {cid: i for i, cid in enumerate(ids)}
    order = sorted(ids, key=lambda cid: (-float(work.get(cid, 1.0)), position[cid]))
    loads = [(0.0, rank) for rank in range(world)]
    owned: list[list[str]] = [[] for _ in range(world)]
    for cid in order:
        load, rank = heapq.heappop(loads)
        owned[rank].append(cid)
        heapq.heappush(loads, (load + float(work.get(cid, 1.0)), rank))
    return [sorted(mine, key=position.__getitem__) for mine in owned]


class ShardedTransport:
    """Delivers only the messages of the clients this rank owns in the round; the other
    ranks deliver the rest, and the round's totals are all-reduced afterwards."""

    def __init__(self, inner: Transport, rank: int, world: int, work: Mapping[str, float]) -> None:
        self.inner = inner
        self.rank, self.world = rank, world
        self.work = dict(work)
        """Expected cost of each client's round (its planned local steps)."""

    def exchange(self, messages: Mapping[str, Message]) -> Iterator[Reply]:
        mine = balanced_assignment(list(messages), self.work, self.world)[self.rank]
        yield from self.inner.exchange({cid: messages[cid] for cid in mine})
