"""Every incoming update is checked before it can touch the aggregate."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from fedloom.compression.codec import Codec
from fedloom.core.errors import UpdateRejected
from fedloom.core.message import Message
from fedloom.core.tensors import Tensors
from fedloom.transport.wire import frame_size


@dataclass(frozen=True)
class UpdateSpec:
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, torch.dtype]
    max_bytes: int

    @classmethod
    def of(cls, state: Mapping[str, Tensor], max_bytes: int) -> UpdateSpec:
        return cls(
            {n: tuple(t.shape) for n, t in state.items()},
            {n: t.dtype for n, t in state.items()},
            max_bytes,
        )


def check_update(
    message: Message, rnd: int, sender: str, spec: UpdateSpec, codec: Codec
) -> Tensors:
    """The decoded update, or ``UpdateRejected`` naming the first problem found."""
    if message.kind != "fit_result":
        raise UpdateRejected(f"expected a fit_result, got {message.kind!r}")
    if message.round != rnd:
        raise UpdateRejected(f"update is for round {message.round}, the server is in round {rnd}")
    if message.sender != sender:
        raise UpdateRejected(f"update signed by {message.sender!r} arrived from {sender!r}")
    size = frame_size(message)
    if size > spec.max_bytes:
        raise UpdateRejected(f"update of {size} bytes exceeds the limit of {spec.max_bytes}")
    n = message.meta.get("num_examples")
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise UpdateRejected(f"num_examples must be a positive integer, got {n!r}")
    update = codec.decode(message.payload)
    missing, extra = sorted(set(spec.shapes) - set(update)), sorted(set(update) - set(spec.shapes))
    if missing or extra:
        raise UpdateRejected(f"tensor names differ: missing {missing[:5]}, unexpected {extra[:5]}")
    for name, t in update.items():
        if tuple(t.shape) != spec.shapes[name]:
            raise UpdateRejected(f"{name}: shape {tuple(t.shape)} != {spec.shapes[name]}")
        if t.dtype != spec.dtypes[name]:
            raise UpdateRejected(f"{name}: dtype {t.dtype} != {spec.dtypes[name]}")
        # min and max propagate NaN and expose ±inf: two reductions, no temporary mask
        if t.numel() and not bool(torch.isfinite(torch.stack(torch.aminmax(t))).all()):
            raise UpdateRejected(f"{name}: contains NaN or infinite values")
    return update
