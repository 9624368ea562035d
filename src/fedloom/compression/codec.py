"""The lossless baseline codec (``none``), and the codec contract re-exported from
``fedloom.core.codec`` where it lives."""

from __future__ import annotations

from safetensors import SafetensorError
from safetensors.torch import load, save

from fedloom.compression.safeview import max_blob_bytes, tensors_view
from fedloom.core.codec import (
    BoundedCodec,
    Codec,
    CodecContext,
    DTypes,
    Key,
    Shapes,
    StatefulCodec,
    downlink_key,
    encode_update,
    max_encoded_bytes,
    uplink_key,
)
from fedloom.core.errors import UpdateRejected
from fedloom.core.message import Payload
from fedloom.core.tensors import Tensors

__all__ = [
    "BoundedCodec",
    "Codec",
    "CodecContext",
    "DTypes",
    "Key",
    "RawCodec",
    "Shapes",
    "StatefulCodec",
    "downlink_key",
    "encode_update",
    "max_encoded_bytes",
    "raw_codec",
    "uplink_key",
]


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


def raw_codec(arg: str | None, ctx: CodecContext) -> RawCodec:
    """The registered ``none`` codec; it takes no argument."""
    if arg is not None:
        raise ValueError(f"codec 'none' takes no argument, got 'none:{arg}'")
    return RawCodec()
