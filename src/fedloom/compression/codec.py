"""The codec contract, and the lossless baseline every other codec is measured against."""

from __future__ import annotations

from typing import Protocol

from safetensors import SafetensorError
from safetensors.torch import load, save

from fedloom.core.errors import UpdateRejected
from fedloom.core.tensors import Tensors


class Codec(Protocol):
    """Turns named tensors into bytes and back. ``len(encode(t))`` is what crosses the wire."""

    name: str

    def encode(self, tensors: Tensors) -> bytes: ...

    def decode(self, data: bytes) -> Tensors: ...


class RawCodec:
    """Lossless: the tensors as they are (float32 for the built-in models), in safetensors."""

    name = "none"

    def encode(self, tensors: Tensors) -> bytes:
        return save({name: t.contiguous() for name, t in tensors.items()})

    def decode(self, data: bytes) -> Tensors:
        try:
            return load(data)
        except (SafetensorError, ValueError, RuntimeError, TypeError, OverflowError) as error:
            raise UpdateRejected(f"payload is not a valid safetensors blob: {error}") from None
