"""Sparsifiers: which entries of a tensor are sent. Indices travel as uint16 or int32."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from fedloom.core.errors import UpdateRejected

Selector = Callable[[Tensor, int, torch.Generator], Tensor]
"""(flat tensor, k, generator) -> the k kept indices, sorted ascending."""


def kept(n: int, fraction: float) -> int:
    """How many of ``n`` entries a sparsifier keeps: at least one of a non-empty tensor."""
    return 0 if n == 0 else min(n, max(1, math.ceil(fraction * n)))


def index_width(n: int) -> int:
    """Bytes per index: uint16 addresses up to 65,536 entries, int32 the rest."""
    return 2 if n <= 1 << 16 else 4


def _topk(flat: Tensor, k: int, gen: torch.Generator) -> Tensor:
    return torch.topk(flat.abs(), k, sorted=False).indices.sort().values


def _randk(flat: Tensor, k: int, gen: torch.Generator) -> Tensor:
    return torch.randperm(flat.numel(), generator=gen)[:k].sort().values


SELECTORS: dict[str, Selector] = {"topk": _topk, "randk": _randk}
"""Both keep the chosen values as they are (no n/k rescaling of randk): like topk, randk is
then a contraction, which is what error feedback needs to carry the rest forward."""


def pack_indices(idx: Tensor, n: int) -> bytes:
    dtype = "<u2" if index_width(n) == 2 else "<i4"
    # uint16 holds 0..65535, i.e. index n-1 for n up to 65,536
    return idx.numpy().astype(dtype).tobytes()


def unpack_indices(buf: memoryview, k: int, n: int) -> Tensor:
    dtype = "<u2" if index_width(n) == 2 else "<i4"
    idx = torch.from_numpy(np.frombuffer(buf, dtype=dtype, count=k).astype(np.int64))
    if k and (int(idx[0]) < 0 or int(idx[-1]) >= n or bool((idx[1:] <= idx[:-1]).any())):
        raise UpdateRejected(f"sparse indices must be strictly increasing within 0..{n - 1}")
    return idx
