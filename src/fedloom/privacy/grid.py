"""The fixed-point grid on which updates are summed and noised.

An update clipped to L2 norm C is divided by the grid step γ, projected (in float64)
onto the ball of radius C/γ, and rounded to the nearest integer in every coordinate.
Rounding moves each of the d coordinates by at most ½, so the integer vector has norm at
most C/γ + √d/2: in the update's own units the L2 sensitivity grows from C to
C + γ·√d/2, and the noise is calibrated to that inflated sensitivity. (Kairouz, Liu and
Steinke 2021, "The Distributed Discrete Gaussian Mechanism", give tighter probabilistic
bounds for randomized rounding; the deterministic bound here needs no failure probability.)

Default step: the largest power of two with γ·√d/2 ≤ C/100 (the inflation costs at most
1% more noise) and σ/γ ≥ ``MIN_GRID_NOISE`` (the noise spans many grid points, so the
discrete Gaussian's privacy curve is the continuous one's to within a relative 1e-5, see
docs/privacy.md). A power of two keeps k·γ exact in float64 for |k| < 2^53.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from fedloom.core.errors import ConfigError, FedloomError
from fedloom.core.tensors import Tensors

ROUNDING_SHARE = 0.01
"""Default grid: worst-case rounding inflation of the sensitivity, relative to the clip."""
MIN_GRID_NOISE = 1024.0
"""The noise std must span at least this many grid steps (σ/γ)."""
INT_LIMIT = 2**62
"""Largest magnitude an integer sum plus its noise may reach (int64 with headroom)."""
NOISE_TAIL = 64
"""Noise magnitudes are budgeted at 64 σ/γ: a discrete Gaussian exceeds it w.p. < e^-2000."""


def grid_step(radius: float, dim: int, noise_std: float, granularity: float | None) -> float:
    """γ for updates of norm ≤ ``radius`` in ``dim`` coordinates, noised with std at least
    ``noise_std`` (0: no noise): ``granularity`` if given (checked), else the default."""
    if granularity is not None:
        if noise_std > 0 and noise_std / granularity < MIN_GRID_NOISE:
            raise ConfigError(
                [
                    f"privacy.granularity={granularity} is too coarse for the noise "
                    f"(std {noise_std:.3g}, {noise_std / granularity:.3g} grid steps; need "
                    f"≥ {MIN_GRID_NOISE:g}): use at most {noise_std / MIN_GRID_NOISE:.3g} "
                    "or leave it unset"
                ]
            )
        if radius / granularity > INT_LIMIT / 2**20:
            raise ConfigError([f"privacy.granularity={granularity} is too fine for int64 sums"])
        return granularity
    bound = 2 * ROUNDING_SHARE * radius / math.sqrt(max(dim, 1))
    if noise_std > 0:
        bound = min(bound, noise_std / MIN_GRID_NOISE)
    return 2.0 ** math.floor(math.log2(bound))


def rounding_slack(step: float, dim: int) -> float:
    """The largest L2 norm of a nearest-rounding error on the grid: γ·√d/2."""
    return step * math.sqrt(dim) / 2


def to_grid(update: Mapping[str, Tensor], radius: float, step: float) -> dict[str, Tensor]:
    """``update / step`` projected onto the ball of radius ``radius / step`` (in float64,
    so a float32 clip's rounding cannot push it out) and rounded to the nearest integer.
    The result's L2 norm is at most ``radius / step + √d / 2``."""
    scaled = {name: t.detach().to(torch.float64) / step for name, t in update.items()}
    norm = math.sqrt(sum(float(t.pow(2).sum()) for t in scaled.values()))
    limit = radius / step
    if norm > limit:
        scaled = {name: t * (limit / norm) for name, t in scaled.items()}
    return {name: torch.round(t).to(torch.int64) for name, t in scaled.items()}


def magnitude(ints: Mapping[str, Tensor]) -> int:
    """The largest absolute coordinate of an integer update."""
    return max((int(t.abs().max()) for t in ints.values() if t.numel()), default=0)


def check_range(total_magnitude: int, noise_scale: float) -> None:
    """Refuse a sum that could overflow int64 once the noise is added."""
    if total_magnitude + math.ceil(NOISE_TAIL * noise_scale) > INT_LIMIT:
        raise FedloomError(
            f"the integer sum on the privacy grid could overflow int64 (magnitude "
            f"{total_magnitude}, noise scale {noise_scale:.3g}): use a coarser "
            "privacy.granularity"
        )


def from_grid(
    ints: Mapping[str, Tensor], step: float, divisor: float, dtypes: Mapping[str, torch.dtype]
) -> Tensors:
    """``ints · step / divisor`` in each tensor's own dtype (float64 in between)."""
    return {
        name: (k.to(torch.float64) * step / divisor).to(dtypes[name]) for name, k in ints.items()
    }
