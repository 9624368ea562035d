"""``Tensors``: the named-tensor dict every layer speaks, and small pure helpers on it."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

Tensors = dict[str, Tensor]


def clone(tensors: Mapping[str, Tensor]) -> Tensors:
    return {name: t.detach().clone() for name, t in tensors.items()}


def subtract(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Tensors:
    """``a - b`` for every name in ``a``."""
    return {name: a[name] - b[name] for name in a}


def global_norm(tensors: Mapping[str, Tensor]) -> float:
    """L2 norm of all tensors taken together as one vector."""
    if not tensors:
        return 0.0
    return float(
        torch.linalg.vector_norm(torch.stack([t.double().norm() for t in tensors.values()]))
    )


def state_of(module: torch.nn.Module) -> Tensors:
    """Detached floating-point parameters and buffers of ``module``, by name."""
    state = {name: p.detach() for name, p in module.named_parameters()}
    state.update({name: b.detach() for name, b in module.named_buffers() if b.is_floating_point()})
    return state
