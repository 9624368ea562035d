"""The codec contract, the lossless baseline, and the compressing codec built from a spec.

Encoding may be random (stochastic rounding, randk); the caller passes a ``key`` such as
``("up", round, client)`` and the codec derives its generator from (seed, *key), so an
encode is reproducible (a resumed run sends the same bytes).
"""

from __future__ import annotations

from typing import Protocol

from safetensors import SafetensorError
from safetensors.torch import load, save

from fedloom.core.errors import UpdateRejected
from fedloom.core.tensors import Tensors

Key = tuple[object, ...]


def uplink_key(rnd: int, client_id: str) -> Key:
    """The key of a client's update encode in round ``rnd``; shared by client and hooks."""
    return ("up", rnd, client_id)


def downlink_key(rnd: int) -> Key:
    return ("down", rnd)


class Codec(Protocol):
    """Turns named tensors into bytes and back. ``len(encode(t))`` is what crosses the wire."""

    name: str

    def encode(self, tensors: Tensors, key: Key = ()) -> bytes: ...

    def decode(self, data: bytes) -> Tensors: ...


class RawCodec:
    """Lossless: the tensors as they are (float32 for the built-in models), in safetensors."""

    name = "none"

    def encode(self, tensors: Tensors, key: Key = ()) -> bytes:
        return save({name: t.contiguous() for name, t in tensors.items()})

    def decode(self, data: bytes) -> Tensors:
        try:
            return load(data)
        except (SafetensorError, ValueError, RuntimeError, TypeError, OverflowError) as error:
            raise UpdateRejected(f"payload is not a valid safetensors blob: {error}") from None
