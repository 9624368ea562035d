"""Robust aggregation rules: pure functions over a round's updates, and the aggregator
that feeds them.

Unlike FedAvg's streaming weighted sum, every rule here needs all of a round's updates at
once (a median or a pairwise distance cannot be streamed), so ``BufferedAggregator`` holds
them: memory grows as O(clients × model) for the round. The rules ignore sample counts
on purpose (except ``norm_bounded_mean``): a Byzantine client can lie about its count. The
weights ``norm_bounded_mean`` gets are the server's weighting (``fedloom.server.weights``:
the server's own sizes, or claims capped at a multiple of the round's median), never a raw
claim.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from fedloom.core.tensors import Tensors

Rule = Callable[[Sequence[Mapping[str, Tensor]], Sequence[float]], Tensors]
"""(updates, sample counts) -> aggregate."""


def _stack(updates: Sequence[Mapping[str, Tensor]], name: str) -> Tensor:
    return torch.stack([u[name] for u in updates])


def _need(updates: Sequence[Mapping[str, Tensor]]) -> None:
    if not updates:
        raise ValueError("no update to aggregate")


def coordinate_median(updates: Sequence[Mapping[str, Tensor]]) -> Tensors:
    """Per-coordinate median (the mean of the two middle values for an even count)."""
    _need(updates)
    # torch.median returns the lower middle value; quantile(0.5) averages the two middles
    return {
        n: torch.quantile(_stack(updates, n).double(), 0.5, dim=0).to(updates[0][n].dtype)
        for n in updates[0]
    }


def trimmed_mean(updates: Sequence[Mapping[str, Tensor]], beta: float) -> Tensors:
    """Per coordinate, drop the ``floor(β·n)`` largest and smallest values, average the rest."""
    _need(updates)
    if not 0 <= beta < 0.5:
        raise ValueError(f"trim beta must be in [0, 0.5), got {beta}")
    k = math.floor(beta * len(updates))
    out: Tensors = {}
    for n in updates[0]:
        ordered = _stack(updates, n).sort(dim=0).values
        out[n] = ordered[k : len(updates) - k].mean(dim=0)
    return out


def _flat(update: Mapping[str, Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1).double() for t in update.values()])


def krum_scores(updates: Sequence[Mapping[str, Tensor]], f: int) -> Tensor:
    """Krum's score of each update: summed squared distance to its n − f − 2 nearest others."""
    n = len(updates)
    if n < 2 * f + 3:
        raise ValueError(f"Krum with f={f} needs at least 2f+3={2 * f + 3} updates, got {n}")
    flat = torch.stack([_flat(u) for u in updates])
    dist = torch.cdist(flat, flat).pow(2)
    dist.fill_diagonal_(math.inf)  # never count an update as its own neighbour
    nearest = dist.sort(dim=1).values[:, : n - f - 2]
    return nearest.sum(dim=1)


def multi_krum(updates: Sequence[Mapping[str, Tensor]], f: int, m: int | None = None) -> Tensors:
    """Mean of the ``m`` updates with the best Krum scores; ``m=1`` is Krum itself."""
    _need(updates)
    m = len(updates) - f if m is None else m
    if not 1 <= m <= len(updates):
        raise ValueError(f"multi-Krum m must be in [1, {len(updates)}], got {m}")
    chosen = krum_scores(updates, f).argsort()[:m].tolist()
    return {n: _stack([updates[i] for i in chosen], n).mean(dim=0) for n in updates[0]}


def norm_bounded_mean(
    updates: Sequence[Mapping[str, Tensor]], weights: Sequence[float], bound: float
) -> Tensors:
    """Weighted mean after scaling each update down to L2 norm ``bound`` (all tensors as one)."""
    _need(updates)
    if bound <= 0:
        raise ValueError(f"norm bound must be > 0, got {bound}")
    total = float(sum(weights))
    out = {n: torch.zeros_like(t) for n, t in updates[0].items()}
    for update, w in zip(updates, weights, strict=True):
        norm = float(_flat(update).norm())
        factor = w / total * min(1.0, bound / norm) if norm > 0 else 0.0
        for n, t in update.items():
            out[n].add_(t, alpha=factor)
    return out


class BufferedAggregator:
    """Holds a round's updates and combines them with ``rule`` when asked for the result."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.updates: list[Mapping[str, Tensor]] = []
        self.weights: list[float] = []

    @property
    def count(self) -> int:
        return len(self.updates)

    def add(self, client_id: str, update: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
        self.updates.append(update)
        self.weights.append(float(meta["num_examples"]))

    def result(self) -> Tensors:
        return self.rule(self.updates, self.weights)
