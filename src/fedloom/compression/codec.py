"""The lossless baseline codec (``none``), and the codec contract re-exported from
``fedloom.core.codec`` where it lives."""

from __future__ import annotations

import torch
from safetensors import SafetensorError
from safetensors.numpy import save as save_numpy
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


_NUMPY_DTYPES = frozenset(
    {torch.float64, torch.float32, torch.float16, torch.int64, torch.int32, torch.int16}
    | {torch.int8, torch.uint8, torch.bool}
)
"""Tensor dtypes numpy holds as they are (bfloat16, for one, it does not)."""


class RawCodec:
    """Lossless: the tensors as they are (float32 for the built-in models), in safetensors."""

    name = "none"

    def encode(self, tensors: Tensors, key: Key = ()) -> bytes:
        if all(t.device.type == "cpu" and t.dtype in _NUMPY_DTYPES for t in tensors.values()):
            # the same bytes as safetensors.torch.save, at a third of its Python overhead
            # (which dominates for the small updates of a many-client simulation)
            return save_numpy(
                {name: t.detach().contiguous().numpy() for name, t in tensors.items()}
            )
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
