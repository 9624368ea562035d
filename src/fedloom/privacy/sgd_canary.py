"""Per-step gradient canaries for auditing DP-SGD, inside one client's real training.

Step t of the audited client (its t-th DP-SGD step of the audit, over rounds) has a
fair coin b_t and its own direction u_t, uniform on the unit sphere over the trainable
parameters. When b_t, a per-sample gradient ``CANARY_NORM · clip · u_t`` is appended to
the step's per-sample gradients (Opacus' ``p.grad_sample``) before Opacus clips, sums
and noises them: the canary is one more row of the Poisson batch, always in when its
coin is, and goes through the optimizer that fedloom configures (its clip, multiplier,
expected batch size and noise source).

The auditor sees each step's noisy clipped-gradient sum (``p.grad`` right after the
noise, before Opacus divides by the expected batch size) and knows the other samples'
per-sample gradients: it clips and sums them as Opacus does and keeps
``⟨released − Σ others, u_t⟩ / clip``, the clipped canary's share (1, or 0 when out)
plus noise of standard deviation z.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from opacus.optimizers import DPOptimizer
from torch import Tensor, nn

from fedloom.client.context import FitContext
from fedloom.core.seeding import generator
from fedloom.privacy.canary import CANARY_NORM
from fedloom.privacy.dpsgd import DPSGDTrainer, KeyedNoiseDPOptimizer
from fedloom.privacy.noise import NoiseSource


def step_direction(shapes: Sequence[torch.Size], seed: int, step: int) -> list[Tensor]:
    """Step ``step``'s canary direction over tensors of ``shapes``: a float64 unit vector."""
    gen = generator(seed, "audit-sgd-canary", step)
    raw = [torch.randn(shape, generator=gen, dtype=torch.float64) for shape in shapes]
    norm = math.sqrt(math.fsum(float(t.pow(2).sum()) for t in raw))
    return [t / norm for t in raw]


def clipped_sum(grad_samples: Sequence[Tensor], clip: float) -> list[Tensor]:
    """Σ_i min(1, clip / (‖g_i‖ + 1e-6)) · g_i over the rows of the per-sample gradients,
    ‖g_i‖ over all tensors together: Opacus' flat clipping, in float64."""
    rows = [g.double() for g in grad_samples]
    # an empty Poisson batch has 0 rows: an explicit width, -1 is ambiguous there
    flat = [g.reshape(len(g), math.prod(g.shape[1:])) for g in rows]
    norms = torch.stack([g.norm(2, dim=-1) for g in flat], dim=1)
    factor = (clip / (norms.norm(2, dim=1) + 1e-6)).clamp(max=1.0)
    return [torch.einsum("i,i...", factor, g) for g in rows]


class GradientCanaries:
    """One canary per step of client ``client_id`` while coins last; keeps the scores."""

    def __init__(self, coins: Sequence[bool], seed: int, clip: float, client_id: str) -> None:
        self.coins, self.seed, self.clip = list(coins), seed, clip
        self.client_id = client_id
        self.scores: list[float] = []

    @property
    def done(self) -> bool:
        return len(self.scores) >= len(self.coins)


class CanaryDPOptimizer(KeyedNoiseDPOptimizer):
    """fedloom's DP optimizer; each step adds the step's canary (when its coin is in)
    to the per-sample gradients and scores the noisy sum."""

    def __init__(self, *args: Any, canaries: GradientCanaries, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.canaries = canaries
        self.others: list[Tensor] | None = None
        self.direction: list[Tensor] = []

    def clip_and_accumulate(self) -> None:
        canaries = self.canaries
        if canaries.done:
            super().clip_and_accumulate()
            return
        step = len(canaries.scores)
        samples = self.grad_samples
        self.others = clipped_sum(samples, self.max_grad_norm)
        self.direction = step_direction([p.shape for p in self.params], canaries.seed, step)
        if canaries.coins[step]:
            scale = CANARY_NORM * self.max_grad_norm
            for p, g, u in zip(self.params, samples, self.direction, strict=True):
                row = (scale * u).to(g.dtype).unsqueeze(0)
                p.grad_sample = torch.cat([g, row])  # type: ignore[attr-defined]
        super().clip_and_accumulate()

    def add_noise(self) -> None:
        super().add_noise()
        if self.others is None:
            return
        released = [p.grad.double() for p in self.params if p.grad is not None]
        score = math.fsum(
            float(((r - o) * u).sum())
            for r, o, u in zip(released, self.others, self.direction, strict=True)
        )
        self.canaries.scores.append(score / self.max_grad_norm)
        self.others = None


class CanaryDPSGDTrainer(DPSGDTrainer):
    """``inner``'s DP-SGD (its clip, multipliers, ledgers, batches) with the noise drawn
    from ``noise``; the audited client's optimizer carries the canaries."""

    def __init__(self, inner: DPSGDTrainer, noise: NoiseSource, canaries: GradientCanaries):
        super().__init__(
            inner.config,
            inner.clip,
            inner.noise_multipliers,
            noise,
            inner.ledgers,
            inner.secure_batches,
            user=inner,
        )
        self.canaries = canaries

    def optimizer(self, params: list[nn.Parameter], ctx: FitContext | None) -> DPOptimizer:
        base = super().optimizer(params, ctx)
        if (
            ctx is None
            or ctx.client_id != self.canaries.client_id
            or not isinstance(base, KeyedNoiseDPOptimizer)
        ):
            return base
        return CanaryDPOptimizer(
            base.original_optimizer,
            noise_multiplier=base.noise_multiplier,
            max_grad_norm=base.max_grad_norm,
            expected_batch_size=base.expected_batch_size,
            noise=base.noise,
            keys=base.keys,
            canaries=self.canaries,
        )
