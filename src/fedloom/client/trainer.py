"""Local training: E epochs or a fixed number of steps of minibatch SGD on a client's data.

Batches are drawn by indexing the client's in-memory tensors with a seeded permutation:
no DataLoader, no worker processes, no per-sample Python. That is most of why a round of
fedloom is cheaper than the usual hand-written loop over ``Subset`` + ``DataLoader``.
A lazily read dataset (``LazyData``) gets the same index batches, read through its
``DataLoader``; dict inputs are passed as keyword arguments (``model(**inputs)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.optim import Optimizer

from fedloom.client.config import TrainConfig
from fedloom.client.context import FitContext, TrainResult
from fedloom.client.task import forward_inputs
from fedloom.data.base import Split

Loss = Callable[[Any, Tensor], Tensor]
OptimizerFactory = Callable[[list[nn.Parameter]], Optimizer]
TrainStep = Callable[[nn.Module, tuple[Any, Tensor]], Tensor]
"""``train_step(model, (x, y)) -> loss``: one minibatch's loss, for anything exotic."""
Augment = Callable[[Any, torch.Generator], Any]
"""``augment(x, generator) -> x``: a random transform of a training batch's inputs (a
tensor, or a dict of them), drawing only from ``generator`` (seeded per client and
round: runs stay reproducible)."""
Penalty = Callable[[nn.Module, FitContext], Tensor]
"""An extra term added to each minibatch loss (e.g. FedProx's proximal term)."""
GradHook = Callable[[nn.Module, FitContext], None]
"""Runs after backward and before the optimizer step (e.g. SCAFFOLD's correction)."""

__all__ = [
    "STEP_BUDGET_KEY",
    "GradHook",
    "LocalTrainer",
    "Loss",
    "Penalty",
    "TrainConfig",
    "planned_steps",
]


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
    """Trains a model in place on one client's data with SGD.

    One loop for every trainer; a subclass changes its parts: ``optimizer`` (e.g. DP-SGD's
    noisy one), ``batches`` (e.g. Poisson sampling), ``forward_model`` (e.g. a per-sample
    gradient wrapper), ``empty_step`` (what a step with an empty batch does) and
    ``finish`` (e.g. accounting once the round's steps are known)."""

    def __init__(
        self,
        config: TrainConfig,
        loss: Loss = F.cross_entropy,
        *,
        optimizer: OptimizerFactory | None = None,
        train_step: TrainStep | None = None,
        augment: Augment | None = None,
    ) -> None:
        self.config = config
        self.loss = loss
        """``loss(model output, target)``, a mean over the batch."""
        self.make_optimizer = optimizer
        """The user's ``optimizer(params)``; None: SGD from ``config``."""
        self.train_step = train_step
        """The user's ``train_step(model, (x, y)) -> loss``, replacing loss(model(x), y)."""
        self.augment = augment
        """The user's ``augment(x_batch, generator) -> x_batch``, on training batches only."""
        self.penalties: list[Penalty] = []
        self.grad_hooks: list[GradHook] = []

    def optimizer(self, params: list[nn.Parameter], ctx: FitContext | None) -> Optimizer:
        if self.make_optimizer is not None:
            return self.make_optimizer(params)
        cfg = self.config
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )

    def batches(self, n: int, gen: torch.Generator, ctx: FitContext | None) -> Iterator[Tensor]:
        """Index tensors of this round's minibatches: whole shuffled epochs."""
        cfg = self.config
        return _batches(n, cfg.batch_size or n, planned_steps(cfg, n), gen, _budget(ctx))

    @contextmanager
    def forward_model(self, model: nn.Module) -> Iterator[nn.Module]:
        """The module the batches go through (the model itself)."""
        yield model

    def empty_step(self, params: list[nn.Parameter]) -> bool:
        """A batch with no example: skipped (return False) unless a subclass steps."""
        return False

    def finish(self, ctx: FitContext | None, n: int, steps: int) -> None:
        """After the round's last step."""

    def train(
        self,
        model: nn.Module,
        data: Split,
        gen: torch.Generator,
        ctx: FitContext | None = None,
    ) -> TrainResult:
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = self.optimizer(params, ctx)
        n = len(data)
        model.train()
        loss_sum, seen, steps = torch.zeros((), dtype=torch.float64), 0, 0
        with self.forward_model(model) as forward:
            for idx, batch in data.batches(self.batches(n, gen, ctx)):
                optimizer.zero_grad(set_to_none=True)
                if len(idx) == 0 or batch is None:
                    if self.empty_step(params):
                        optimizer.step()
                        steps += 1
                    continue
                xb, yb = batch
                if self.augment is not None:  # drawn from the client's own generator
                    xb = self.augment(xb, gen)
                if self.train_step is not None:
                    loss = self.train_step(forward, (xb, yb))
                else:
                    loss = self.loss(forward_inputs(forward, xb), yb)
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
        self.finish(ctx, n, steps)
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
