"""L2 clipping of a whole update (every trainable tensor together): pure functions."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from fedloom.core.tensors import Tensors, global_norm


def clip_update(update: Mapping[str, Tensor], clip: float) -> tuple[Tensors, float]:
    """``(update scaled to norm ≤ clip, the original norm)``; an update inside the ball is
    returned unchanged. The scale is computed in float64 and rounded down so that
    float32 rounding cannot push the clipped norm above ``clip``."""
    if clip <= 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    norm = global_norm(update)
    if norm <= clip:
        return {n: t.clone() for n, t in update.items()}, norm
    scale = clip / norm * (1 - 1e-6)
    return {n: (t.double() * scale).to(t.dtype) for n, t in update.items()}, norm
