"""The codec contract, the lossless baseline, and the compressing codec built from a spec.

Encoding may be random (stochastic rounding, randk); the caller passes a ``key`` such as
``("up", round, client)`` and the codec derives its generator from (seed, *key), so an
encode is reproducible (a resumed run sends the same bytes).

A codec may also say how large an encoded update can legally be
(``max_encoded_bytes``): the server then refuses any larger upload before reading it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from fedloom.compression.safeview import max_blob_bytes, tensors_view
from fedloom.core.errors import UpdateRejected
from fedloom.core.message import Payload
from fedloom.core.tensors import Tensors

Key = tuple[object, ...]
Shapes = Mapping[str, tuple[int, ...]]
DTypes = Mapping[str, torch.dtype]


def uplink_key(rnd: int, client_id: str) -> Key:
    """The key of a client's update encode in round ``rnd``; shared by client and hooks."""
    return ("up", rnd, client_id)


def downlink_key(rnd: int) -> Key:
    return ("down", rnd)


class Codec(Protocol):
    """Turns named tensors into bytes and back. ``len(encode(t))`` is what crosses the wire.

    ``decode`` of a writable buffer (a received frame) may return tensors that share its
    memory; of ``bytes`` it returns tensors of their own."""

    name: str

    def encode(self, tensors: Tensors, key: Key = ()) -> bytes: ...

    def decode(self, data: Payload) -> Tensors: ...


@runtime_checkable
class BoundedCodec(Protocol):
    """A codec that knows the largest encoding of tensors of given shapes and dtypes."""

    def max_encoded_bytes(self, shapes: Shapes, dtypes: DTypes) -> int: ...


def max_encoded_bytes(codec: object, shapes: Shapes, dtypes: DTypes) -> int | None:
    """The codec's bound for an update of these shapes, or None if it has none."""
    if isinstance(codec, BoundedCodec):
        return codec.max_encoded_bytes(shapes, dtypes)
    return None


class RawCodec:
    """Lossless: the tensors as they are (float32 for the built-in models), in safetensors."""

    name = "none"

    def encode(self, tensors: Tensors, key: Key = ()) -> bytes:
        return save({name: t.contiguous() for name, t in tensors.items()})

    def decode(self, data: Payload) -> Tensors:
        view = memoryview(data)
        try:
            if not view.readonly and view.c_contiguous:
                return tensors_view(view)  # a received frame: views of it, no copy
            return load(bytes(data))  # shared or read-only bytes: tensors of their own
        except (SafetensorError, ValueError, RuntimeError, TypeError, OverflowError) as error:
            raise UpdateRejected(f"payload is not a valid safetensors blob: {error}") from None

    def max_encoded_bytes(self, shapes: Shapes, dtypes: DTypes) -> int:
        return max_blob_bytes(shapes, dtypes)
