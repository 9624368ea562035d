"""Magnitude pruning of the global model, to shrink the model a device downloads and runs.

After every server step the smallest-magnitude entries of each weight tensor (two or more
dimensions; biases are left alone) are set to zero, so each such tensor has the round's
target sparsity. The target grows linearly to ``prune`` over ``prune_ramp`` rounds, which
lets the model adapt before most weights are gone (Zhu & Gupta 2017 use a cubic ramp).
Pruned entries may regrow in a later round; the exported final model has the target.
``PrunedStrategy`` wraps the run's strategy to prune after its ``apply``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from fedloom.core.tensors import Tensors
from fedloom.server.strategy import Strategy, StrategyWrapper


def prune_tensor(t: Tensor, sparsity: float) -> Tensor:
    """``t`` with its ``floor(sparsity * numel)`` smallest-magnitude entries set to zero."""
    drop = int(sparsity * t.numel())
    if drop == 0:
        return t
    flat = t.flatten().clone()
    flat[torch.topk(flat.abs(), drop, largest=False, sorted=False).indices] = 0
    return flat.view_as(t)


def sparsity_of(tensors: Mapping[str, Tensor]) -> float:
    """Share of exactly-zero entries over the prunable (weight) tensors."""
    weights = [t for t in tensors.values() if t.dim() >= 2]
    total = sum(t.numel() for t in weights)
    return sum(int((t == 0).sum()) for t in weights) / total if total else 0.0


class MagnitudePruner:
    """Prunes each new global state (``step``); checkpointed through its ``state_dict``."""

    def __init__(self, target: float, ramp: int) -> None:
        self.target, self.ramp = target, ramp
        self.steps = 0
        self.sparsity = 0.0

    def level(self, step: int) -> float:
        return self.target if self.ramp == 0 else self.target * min(1.0, step / self.ramp)

    def step(self, new: Mapping[str, Tensor]) -> Tensors:
        """``new`` with every weight tensor pruned to this step's sparsity."""
        self.steps += 1
        level = self.level(self.steps)
        pruned = {n: prune_tensor(t, level) if t.dim() >= 2 else t for n, t in new.items()}
        self.sparsity = sparsity_of(pruned)
        return pruned

    def metrics(self, rnd: int) -> dict[str, Any]:
        return {"sparsity": self.sparsity}

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "sparsity": self.sparsity}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps, self.sparsity = int(state["steps"]), float(state["sparsity"])


class PrunedStrategy(StrategyWrapper):
    """``inner`` in every phase; its ``apply`` is followed by the pruner's step."""

    def __init__(self, inner: Strategy, pruner: MagnitudePruner) -> None:
        super().__init__(inner)
        self.pruner = pruner

    def apply(self, global_state: Mapping[str, Tensor], aggregate: Mapping[str, Tensor]) -> Tensors:
        return self.pruner.step(self.inner.apply(global_state, aggregate))
