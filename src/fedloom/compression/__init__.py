"""Codecs: ``encode(tensors) -> bytes`` and ``decode(bytes) -> tensors``, sizes exact."""

from typing import TYPE_CHECKING

from fedloom.core.lazy import lazy_exports

if TYPE_CHECKING:
    from fedloom.compression.blob import SpecCodec as SpecCodec
    from fedloom.compression.codec import Codec as Codec
    from fedloom.compression.codec import RawCodec as RawCodec
    from fedloom.compression.codec import downlink_key as downlink_key
    from fedloom.compression.codec import uplink_key as uplink_key

_EXPORTS = {
    "SpecCodec": "fedloom.compression.blob",
    "Codec": "fedloom.compression.codec",
    "RawCodec": "fedloom.compression.codec",
    "downlink_key": "fedloom.compression.codec",
    "uplink_key": "fedloom.compression.codec",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
