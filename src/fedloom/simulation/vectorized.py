"""Vectorized clients: train a group of one round's clients in one batched call per step.

Every client of the group starts from the same global weights; their weights are stacked
along a leading client dimension and each local SGD step is one ``torch.func.vmap`` of a
``functional_call`` of the shared model and one backward pass. What vmap cannot take, a
generator per client, never enters the call: each client's minibatch indices are drawn
beforehand from its own shuffling stream (the trainer's ``batches``), so client k sees
exactly the batches it would see when trained alone.

Clients run different numbers of steps (their data sizes differ). They are sorted by step
count, longest first, so the clients still training at step t are a prefix of the group:
the step runs on that prefix only and the finished ones keep their weights. A minibatch
shorter than the longest one (the last batch of an epoch) is padded and its loss is the
masked mean over its real examples, which needs a loss that is a mean of per-example
losses (cross-entropy, MSE). The SGD step is torch.optim.SGD's (momentum, weight decay,
no dampening, no Nesterov), optionally with FedProx's proximal gradient and SCAFFOLD's
drift correction ``c − c_i``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from fedloom.core.tensors import Tensors
from fedloom.data.base import TensorData

Randomness = Literal["error", "different"]
LossFn = Callable[[Any, Tensor], Tensor]


@dataclass(frozen=True)
class StepRule:
    """One local SGD step, as ``torch.optim.SGD`` takes it (no dampening, no Nesterov)."""

    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    mu: float = 0.0
    """FedProx's proximal weight: the objective gains ``μ/2 ‖w − w_global‖²``."""


@dataclass(frozen=True)
class ClientJob:
    """One client's share of a group: its data and its round's minibatch indices."""

    data: TensorData
    batches: Sequence[Tensor]
    """Index tensors of its minibatches, in order, drawn from the client's own stream."""
    correction: Tensors | None = None
    """Added to every gradient (SCAFFOLD's ``c − c_i``), by trainable parameter name."""


@dataclass(frozen=True)
class JobResult:
    local: Tensors
    """The trained values of the trainable parameters."""
    loss: float
    """Mean training loss over every example seen (as ``LocalTrainer`` reports it)."""
    steps: int


def trainable_names(model: nn.Module) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad]


@dataclass(frozen=True)
class GroupResult:
    """A trained group, its weights still stacked: row k is job k."""

    params: Tensors
    """The trained values of the trainable parameters, each ``(jobs, *shape)``."""
    losses: list[float]
    steps: list[int]

    def job(self, k: int) -> JobResult:
        return JobResult({n: p[k] for n, p in self.params.items()}, self.losses[k], self.steps[k])


def train_group(
    model: nn.Module,
    jobs: Sequence[ClientJob],
    start: Mapping[str, Tensor],
    rule: StepRule,
    loss: LossFn,
    *,
    randomness: Randomness = "error",
) -> list[JobResult]:
    """``train_stacked``, one result per job, in order."""
    result = train_stacked(model, jobs, start, rule, loss, randomness=randomness)
    return [result.job(k) for k in range(len(jobs))]


def train_stacked(
    model: nn.Module,
    jobs: Sequence[ClientJob],
    start: Mapping[str, Tensor],
    rule: StepRule,
    loss: LossFn,
    *,
    randomness: Randomness = "error",
) -> GroupResult:
    """Train every job's client from ``start`` (the global weights by name; a trainable
    parameter missing there starts from ``model``'s value), the trained weights left
    stacked (``GroupResult``): row k is job k."""
    names = trainable_names(model)
    own = dict(model.named_parameters())
    fixed: Tensors = {n: p.detach() for n, p in own.items() if not p.requires_grad}
    fixed.update(dict(model.named_buffers()))
    initial = {n: (start[n] if n in start else own[n]).detach() for n in names}
    anchor = {n: start[n].detach() for n in names if n in start}
    params = {n: t.unsqueeze(0).repeat(len(jobs), *([1] * t.dim())) for n, t in initial.items()}
    if not any(job.batches for job in jobs):  # nothing to train: every row is the start
        return GroupResult(params, [0.0] * len(jobs), [0] * len(jobs))
    order = sorted(range(len(jobs)), key=lambda k: -len(jobs[k].batches))  # stable
    group = _Group([jobs[k] for k in order])
    corrections = _stacked_corrections([jobs[k] for k in order], names)
    step = _step_function(model, fixed, names, anchor, rule.mu, loss, randomness)
    model.train()
    momentum: Tensors = {}
    for t, active in enumerate(group.active):
        current = {n: p[:active] for n, p in params.items()}
        grads, losses = step(current, *group.batch(t, active))
        group.record(t, active, losses.detach())
        for n in names:
            d = grads[n]
            if corrections is not None and n in corrections:
                d = d + corrections[n][:active]
            if rule.weight_decay:
                d = d.add(current[n], alpha=rule.weight_decay)
            if rule.momentum:
                if t == 0:
                    momentum[n] = d.clone()
                else:
                    momentum[n][:active].mul_(rule.momentum).add_(d)
                d = momentum[n][:active]
            current[n].sub_(d, alpha=rule.lr)  # a view: updates the stacked weights
    mean_losses, steps = [0.0] * len(jobs), [0] * len(jobs)
    for i, (k, loss_i) in enumerate(zip(order, group.mean_losses(), strict=True)):
        mean_losses[k], steps[k] = loss_i, group.steps[i]
    if order != sorted(order):  # rows back into the jobs' order
        back = torch.tensor(sorted(range(len(order)), key=order.__getitem__))
        params = {n: p.index_select(0, back.to(p.device)) for n, p in params.items()}
    return GroupResult(params, mean_losses, steps)


class _Group:
    """The group's minibatches as dense tensors ``(clients, steps, batch, ...)``, with a
    mask where a batch is shorter than the longest, and the running loss sums."""

    def __init__(self, jobs: Sequence[ClientJob]) -> None:
        self.steps = [len(job.batches) for job in jobs]
        longest = max(self.steps)
        self.active = [sum(1 for s in self.steps if s > t) for t in range(longest)]
        # sizes through .shape: Tensor.__len__ is a Python call per batch
        widths = [[b.shape[0] for b in job.batches] for job in jobs]
        width = max((w for client in widths for w in client), default=0)
        # one gather from all the clients' data: index i of client k is i + its offset
        x = torch.cat([job.data.x for job in jobs])
        y = torch.cat([job.data.y for job in jobs])
        counts = torch.tensor([0] + [len(job.data) for job in jobs[:-1]])
        idx, weight = _padded_group([job.batches for job in jobs], widths, width, longest)
        idx = (idx + counts.cumsum(0).view(-1, 1, 1)).clamp_(0, max(len(x) - 1, 0))
        self.x, self.y = x[idx.to(x.device)], y[idx.to(y.device)]
        self.weight = weight.to(self.x.device)
        self.sizes = self.weight.sum(-1)
        self.masked = [bool((self.weight[:a, t] == 0).any()) for t, a in enumerate(self.active)]
        self.loss_sum = torch.zeros(len(jobs), dtype=torch.float64, device=self.x.device)
        self.seen: list[float] = self.sizes.sum(-1).tolist()

    def batch(self, t: int, active: int) -> tuple[Tensor, Tensor, Tensor | None]:
        weight = self.weight[:active, t] if self.masked[t] else None
        return self.x[:active, t], self.y[:active, t], weight

    def record(self, t: int, active: int, losses: Tensor) -> None:
        self.loss_sum[:active] += losses * self.sizes[:active, t]

    def mean_losses(self) -> list[float]:
        """Each client's mean loss over the examples it saw (``LocalTrainer``'s)."""
        return [
            total / max(seen, 1)
            for total, seen in zip(self.loss_sum.tolist(), self.seen, strict=True)
        ]


def _padded_group(
    batches: Sequence[Sequence[Tensor]], widths: Sequence[Sequence[int]], width: int, steps: int
) -> tuple[Tensor, Tensor]:
    """``(indices, weights)`` of shape ``(clients, steps, width)``: each client's batches
    (of sizes ``widths``), padded with index 0 at weight 0 (shorter batches, and the steps
    after its last)."""
    if all(len(w) == steps and all(i == width for i in w) for w in widths):
        flat = torch.stack([i for b in batches for i in b])  # the common case: one stack
        return flat.view(len(batches), steps, width), torch.ones(len(batches), steps, width)
    idx = torch.zeros(len(batches), steps, width, dtype=torch.int64)
    weight = torch.zeros(len(batches), steps, width)
    for k, client in enumerate(batches):
        for s, b in enumerate(client):
            idx[k, s, : len(b)] = b
            weight[k, s, : len(b)] = 1.0
    return idx, weight


def _stacked_corrections(jobs: Sequence[ClientJob], names: Sequence[str]) -> Tensors | None:
    if all(job.correction is None for job in jobs):
        return None
    stacked: Tensors = {}
    for n in names:
        values = [(job.correction or {}).get(n) for job in jobs]
        if any(v is not None for v in values):
            like = next(v for v in values if v is not None)
            stacked[n] = torch.stack([torch.zeros_like(like) if v is None else v for v in values])
    return stacked


StepFn = Callable[[Tensors, Tensor, Tensor, "Tensor | None"], tuple[Tensors, Tensor]]


def _step_function(
    model: nn.Module,
    fixed: Tensors,
    names: Sequence[str],
    anchor: Tensors,
    mu: float,
    loss: LossFn,
    randomness: Randomness,
) -> StepFn:
    """``step(params, x, y, weight | None) -> (grads, losses)`` over a stacked group.

    The forward pass is vmapped; the gradients come from one ordinary backward pass of the
    sum of the clients' losses: client k's weights appear only in its own loss, so the
    gradient's slice k is exactly its own gradient: the same as ``vmap(grad(loss))``,
    through plain autograd."""

    def client_loss(params: Tensors, x: Tensor, y: Tensor, weight: Tensor | None) -> Tensor:
        out = functional_call(model, (params, fixed), (x,))
        if weight is None:
            return loss(out, y)
        each = vmap(lambda o, t: loss(o.unsqueeze(0), t.unsqueeze(0)))(out, y)
        return (each * weight).sum() / weight.sum()  # the batch's real examples only

    full = vmap(client_loss, in_dims=(0, 0, 0, None), randomness=randomness)
    masked = vmap(client_loss, in_dims=(0, 0, 0, 0), randomness=randomness)

    def step(
        params: Tensors, x: Tensor, y: Tensor, weight: Tensor | None
    ) -> tuple[Tensors, Tensor]:
        leaves = {n: p.detach().requires_grad_() for n, p in params.items()}
        with torch.enable_grad():
            losses = full(leaves, x, y, None) if weight is None else masked(leaves, x, y, weight)
            total = losses.sum()
            if mu:  # FedProx: μ/2 ‖w_k − w_global‖² for each client k
                prox = sum(((leaves[n] - anchor[n]) ** 2).sum() for n in names if n in anchor)
                total = total + 0.5 * mu * prox
            grads = torch.autograd.grad(total, [leaves[n] for n in names])
        return dict(zip(names, grads, strict=True)), losses.detach()

    return step
