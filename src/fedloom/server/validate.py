"""Every incoming update is checked before it can touch the aggregate.

That includes every reply meta field the server reads: a client holding a valid token can
put anything JSON allows there (a string, ``NaN``, ``10**400``, ``true``), and each such
value is an ``UpdateRejected`` here, never a crash of the round loop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fedloom.core.codec import Codec
from fedloom.core.errors import NON_FINITE, NonFinite, UpdateRejected
from fedloom.core.message import MAX_ABS_LOSS, Message
from fedloom.core.tensors import Tensors
from fedloom.transport.wire import frame_size

MAX_EXAMPLES = 10**9
"""Largest ``num_examples`` a reply may claim (a billion examples on one client)."""
"""Largest ``|train_loss|`` accepted: the round's loss sum (loss x examples, over every
client) then stays finite, so metrics.jsonl never holds ``Infinity``."""


@dataclass(frozen=True)
class ReplyMeta:
    """The reply meta fields the round loop uses, checked."""

    num_examples: int
    train_loss: float | None


def check_int(meta: Mapping[str, Any], key: str, low: int, high: int) -> int:
    """``meta[key]`` as a true ``int`` (never a bool) in ``[low, high]``."""
    value = meta.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise UpdateRejected(f"{key} must be an integer in [{low}, {high}], got {shorten(value)}")
    return value


MAX_ABS_VALUE = 1e30
"""Largest |value| an update may hold: far beyond any trained model, far below where
a sum or an optimizer's second moment overflows float32."""


def check_real(
    meta: Mapping[str, Any], key: str, low: float = -math.inf, high: float = math.inf
) -> float:
    """``meta[key]`` as a finite float in ``[low, high]`` (an int or a float, never a bool)."""
    value = meta.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise UpdateRejected(f"{key} must be a number, got {shorten(value)}")
    try:
        real = float(value)
    except OverflowError:  # an int beyond float range, e.g. 10**400
        real = math.inf
    if not (math.isfinite(real) and low <= real <= high):
        raise UpdateRejected(
            f"{key} must be a finite number in [{low:g}, {high:g}], got {shorten(value)}"
        )
    return real


def check_meta(meta: Mapping[str, Any]) -> ReplyMeta:
    """``num_examples`` in [1, ``MAX_EXAMPLES``]; ``train_loss`` absent or a number of
    magnitude at most ``MAX_ABS_LOSS``."""
    if not isinstance(meta, Mapping):
        raise UpdateRejected(f"reply meta must be an object, got {type(meta).__name__}")
    n = check_int(meta, "num_examples", 1, MAX_EXAMPLES)
    loss = meta.get("train_loss")
    if loss is not None:
        loss = check_real(meta, "train_loss", -MAX_ABS_LOSS, MAX_ABS_LOSS)
    return ReplyMeta(n, loss)


def shorten(value: object) -> str:
    """A short repr: a hostile value may be a 400-digit integer or a huge string."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


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
    return check_reply(message, rnd, sender, spec, codec)[0]


def check_reply(
    message: Message, rnd: int, sender: str, spec: UpdateSpec, codec: Codec
) -> tuple[Tensors, ReplyMeta]:
    """``check_update``'s update together with the checked meta fields, each checked once."""
    if message.kind != "fit_result":
        raise UpdateRejected(f"expected a fit_result, got {message.kind!r}")
    if message.round != rnd:
        raise UpdateRejected(f"update is for round {message.round}, the server is in round {rnd}")
    if message.sender != sender:
        raise UpdateRejected(f"update signed by {message.sender!r} arrived from {sender!r}")
    size = frame_size(message)
    if size > spec.max_bytes:
        raise UpdateRejected(f"update of {size} bytes exceeds the limit of {spec.max_bytes}")
    meta = check_meta(message.meta)
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
        if t.numel():
            low, high = (float(v) for v in torch.aminmax(t))
            if not (math.isfinite(low) and math.isfinite(high)):
                raise NonFinite(f"{name}: contains {NON_FINITE}")
            if max(-low, high) > MAX_ABS_VALUE:
                raise UpdateRejected(f"{name}: values beyond ±{MAX_ABS_VALUE:g}")
    return update, meta
