"""Local training: E epochs or a fixed number of steps of minibatch SGD on a client's data.

Batches are drawn by indexing the client's in-memory tensors with a seeded permutation:
no DataLoader, no worker processes, no per-sample Python. That is most of why a round of
fedloom is cheaper than the usual hand-written loop over ``Subset`` + ``DataLoader``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from torch.nn import functional as F

from fedloom.client.context import FitContext, TrainResult
from fedloom.data.base import TensorData

Loss = Callable[[Tensor, Tensor], Tensor]
Penalty = Callable[[nn.Module, FitContext], Tensor]
"""An extra term added to each minibatch loss (e.g. FedProx's proximal term)."""
GradHook = Callable[[nn.Module, FitContext], None]
"""Runs after backward and before the optimizer step (e.g. SCAFFOLD's correction)."""


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    local_epochs: int = Field(1, ge=1)
    """Passes over the local data per round (ignored when ``local_steps`` is set)."""
    local_steps: int | None = Field(None, ge=1)
    """A fixed number of SGD steps per round instead of epochs."""
    batch_size: int | None = Field(10, ge=1)
    """Minibatch size; ``null`` trains on the full local set each step."""
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)


def planned_steps(config: TrainConfig, n: int) -> int:
    """Local steps a client with ``n`` examples runs in a round: ``local_steps``, or
    ``local_epochs`` passes over its batches (a batch of ``batch_size``, or all n)."""
    if n == 0:
        return 0
    return config.local_steps or config.local_epochs * math.ceil(n / (config.batch_size or n))


def _batches(
    n: int, batch: int, total: int, gen: torch.Generator, budget: int | None = None
) -> Iterator[Tensor]:
    """Index tensors of ``total`` minibatches drawn from whole shuffled epochs."""
    if budget is not None:
        total = min(total, budget)
    done = 0
    while done < total:
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch):
            if done == total:
                return
            yield order[start : start + batch]
            done += 1


class LocalTrainer:
    """Trains a model in place on one client's data with SGD."""

    def __init__(self, config: TrainConfig, loss: Loss = F.cross_entropy) -> None:
        self.config = config
        self.loss = loss
        self.penalties: list[Penalty] = []
        self.grad_hooks: list[GradHook] = []

    def train(
        self,
        model: nn.Module,
        data: TensorData,
        gen: torch.Generator,
        ctx: FitContext | None = None,
    ) -> TrainResult:
        cfg = self.config
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        n = len(data)
        batch = cfg.batch_size or n
        model.train()
        loss_sum, seen, steps = torch.zeros((), dtype=torch.float64), 0, 0
        for idx in _batches(n, batch, planned_steps(cfg, n), gen, _budget(ctx)):
            optimizer.zero_grad(set_to_none=True)
            loss = self.loss(model(data.x[idx]), data.y[idx])
            objective = loss
            for penalty in self.penalties:
                objective = objective + penalty(model, _need(ctx))
            objective.backward()
            for hook in self.grad_hooks:
                hook(model, _need(ctx))
            optimizer.step()
            loss_sum += loss.detach() * len(idx)
            seen += len(idx)
            steps += 1
        return TrainResult(num_examples=n, loss=float(loss_sum) / max(seen, 1), steps=steps)


STEP_BUDGET_KEY = "step_budget"
"""Message meta key: at most this many local steps this round (a slow device's partial work)."""


def _budget(ctx: FitContext | None) -> int | None:
    value = ctx.config.get(STEP_BUDGET_KEY) if ctx is not None else None
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{STEP_BUDGET_KEY} must be a positive integer, got {value!r}")
    return value


def _need(ctx: FitContext | None) -> FitContext:
    if ctx is None:
        raise ValueError("this trainer has penalties or gradient hooks: pass the FitContext")
    return ctx
