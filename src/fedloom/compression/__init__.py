"""Codecs: ``encode(tensors) -> bytes`` and ``decode(bytes) -> tensors``, sizes exact."""

from fedloom.compression.blob import SpecCodec
from fedloom.compression.codec import Codec, RawCodec, downlink_key, uplink_key

__all__ = ["Codec", "RawCodec", "SpecCodec", "downlink_key", "uplink_key"]
