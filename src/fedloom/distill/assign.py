"""Which architecture each client trains: ``clients.models``, drawn with the run's seed."""

from __future__ import annotations

import math
from collections.abc import Sequence

from fedloom.core.seeding import numpy_rng
from fedloom.distill.config import ModelShare


def architectures(shares: Sequence[ModelShare], default: str) -> list[str]:
    """The federation's architectures in the order listed (the first is the one whose
    accuracy is ``test_accuracy``); ``[default]`` without ``clients.models``."""
    return [s.model for s in shares] or [default]


def split_counts(fractions: Sequence[float], total: int) -> list[int]:
    """``total`` split in proportion to ``fractions`` (summing to 1), by largest remainder:
    the counts sum to ``total`` and each is within 1 of its exact share."""
    exact = [f * total for f in fractions]
    counts = [math.floor(e) for e in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def assign_models(shares: Sequence[ModelShare], num: int, default: str, seed: int) -> list[str]:
    """Client k's architecture at position k. Clients an entry lists get its model; the
    rest are shuffled with ``seed`` and cut in the ``fraction`` entries' proportions."""
    if not shares:
        return [default] * num
    chosen: list[str | None] = [None] * num
    for share in shares:
        for cid in share.clients or []:
            chosen[cid] = share.model
    rest = [k for k in range(num) if chosen[k] is None]
    drawn = [s for s in shares if s.fraction is not None]
    order = numpy_rng(seed, "clients.models").permutation(rest).tolist() if rest else []
    start = 0
    for share, count in zip(
        drawn, split_counts([s.fraction or 0.0 for s in drawn], len(rest)), strict=True
    ):
        for k in order[start : start + count]:
            chosen[k] = share.model
        start += count
    missing = [k for k, arch in enumerate(chosen) if arch is None]
    if missing:  # the config check (check_shares) makes this unreachable
        raise ValueError(f"clients.models gives no model to clients {missing[:5]}")
    return [arch for arch in chosen if arch is not None]
