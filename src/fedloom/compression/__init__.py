"""Codecs: ``encode(tensors) -> bytes`` and ``decode(bytes) -> tensors``, sizes exact."""

from fedloom.compression.codec import Codec, RawCodec

__all__ = ["Codec", "RawCodec"]
