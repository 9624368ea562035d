"""Aggregation math: pure functions over named tensors and weights.

The server streams updates into a ``WeightedSum`` as they arrive, so its memory is one
model's worth however many clients report; ``weighted_mean`` is the same fold, for tests
and for callers who already hold every update.

The sum is accumulated in float64 whatever the update's dtype (and cast back when read):
a legal weight (up to ``MAX_EXAMPLES``, 1e9) times a large but finite float32 value could
overflow float32, and one ``inf`` in the sum would leave the global model NaN for good.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor

from fedloom.core.tensors import Tensors


class WeightedSum:
    """Running ``Σ w_k · u_k`` and ``Σ w_k``; ``mean()`` is the weighted average."""

    def __init__(self) -> None:
        self._sum: Tensors = {}
        self._dtypes: dict[str, torch.dtype] = {}
        self.weight = 0.0
        self.count = 0

    def add(self, update: Mapping[str, Tensor], weight: float) -> None:
        if not weight >= 0 or weight == float("inf"):
            raise ValueError(f"aggregation weight must be finite and >= 0, got {weight}")
        if not self._sum:
            self._sum = {n: torch.zeros_like(t, dtype=torch.float64) for n, t in update.items()}
            self._dtypes = {n: t.dtype for n, t in update.items()}
        for name, t in update.items():
            self._sum[name].add_(t.double(), alpha=weight)
        self.weight += weight
        self.count += 1

    def add_rows(self, updates: Mapping[str, Tensor], weights: Sequence[float]) -> None:
        """``add(row i, weights[i])`` for every row i of the stacked ``updates`` (each of
        shape ``(len(weights), ...)``), as one matrix product per tensor in float64."""
        if not all(w >= 0 and w != float("inf") for w in weights):
            bad = next(w for w in weights if not (w >= 0 and w != float("inf")))
            raise ValueError(f"aggregation weight must be finite and >= 0, got {bad}")
        if not weights:
            return
        if not self._sum:
            self._sum = {n: torch.zeros_like(t[0], dtype=torch.float64) for n, t in updates.items()}
            self._dtypes = {n: t.dtype for n, t in updates.items()}
        w = torch.tensor(list(weights), dtype=torch.float64)
        for name, t in updates.items():
            rows = t.reshape(len(weights), -1).double()
            self._sum[name].add_((w @ rows).view_as(self._sum[name]))
        for weight in weights:  # the same float sum as one add() per row
            self.weight += weight
        self.count += len(weights)

    def scaled(self, factor: float) -> Tensors:
        """``factor · Σ w_k u_k``, computed in float64, in each update's own dtype."""
        return {n: (t * factor).to(self._dtypes[n]) for n, t in self._sum.items()}

    @property
    def total(self) -> Tensors:
        """``Σ w_k u_k`` in each update's own dtype."""
        return self.scaled(1.0)

    def mean(self) -> Tensors:
        if self.weight <= 0:
            raise ValueError("no update with positive weight to average")
        return {n: (t / self.weight).to(self._dtypes[n]) for n, t in self._sum.items()}


def weighted_mean(updates: Iterable[tuple[Mapping[str, Tensor], float]]) -> Tensors:
    """``Σ w_k u_k / Σ w_k``: FedAvg's average when ``w_k`` is client k's sample count."""
    acc = WeightedSum()
    for update, weight in updates:
        acc.add(update, weight)
    return acc.mean()
