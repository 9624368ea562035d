"""Codecs: ``encode(tensors) -> bytes`` and ``decode(bytes) -> tensors``, sizes exact."""
