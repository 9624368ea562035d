"""Aggregation math: pure functions over named tensors and weights.

The server streams updates into a ``WeightedSum`` as they arrive, so its memory is one
model's worth however many clients report; ``weighted_mean`` is the same fold, for tests
and for callers who already hold every update.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from fedloom.core.tensors import Tensors


class WeightedSum:
    """Running ``Σ w_k · u_k`` and ``Σ w_k``; ``mean()`` is the weighted average."""

    def __init__(self) -> None:
        self.total: Tensors = {}
        self.weight = 0.0
        self.count = 0

    def add(self, update: Mapping[str, Tensor], weight: float) -> None:
        if weight < 0:
            raise ValueError(f"aggregation weight must be >= 0, got {weight}")
        if not self.total:
            self.total = {name: torch.zeros_like(t) for name, t in update.items()}
        for name, t in update.items():
            self.total[name].add_(t, alpha=weight)
        self.weight += weight
        self.count += 1

    def mean(self) -> Tensors:
        if self.weight <= 0:
            raise ValueError("no update with positive weight to average")
        return {name: t / self.weight for name, t in self.total.items()}


def weighted_mean(updates: Iterable[tuple[Mapping[str, Tensor], float]]) -> Tensors:
    """``Σ w_k u_k / Σ w_k``: FedAvg's average when ``w_k`` is client k's sample count."""
    acc = WeightedSum()
    for update, weight in updates:
        acc.add(update, weight)
    return acc.mean()
