"""Unsigned LEB128 varints and length-prefixed fields: the building blocks of the
SecAgg+ wire format (:mod:`fedloom.secure.messages`).

A varint is the protobuf one: seven bits per byte, least significant group first, the
high bit set on every byte but the last. Only the minimal encoding of a value is
accepted, so every message has exactly one encoding, and values stop at ``2**64 - 1``.
"""

from __future__ import annotations

from fedloom.core.errors import UpdateRejected

MAX_UINT = 2**64 - 1
_MAX_VARINT_BYTES = 10


def uint(value: int) -> bytes:
    """The minimal varint of ``value`` (``0 ≤ value < 2**64``)."""
    if not 0 <= value <= MAX_UINT:
        raise ValueError(f"a wire integer must lie in [0, 2**64), got {value}")
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def blob(value: bytes) -> bytes:
    """``value`` preceded by its length as a varint."""
    return uint(len(value)) + value


class Reader:
    """Reads fields from the front of a message; every failure is an ``UpdateRejected``
    naming the field, never an ``IndexError``."""

    def __init__(self, data: bytes | bytearray | memoryview, what: str) -> None:
        self.data, self.at, self.what = bytes(data), 0, what

    @property
    def left(self) -> int:
        return len(self.data) - self.at

    def byte(self, name: str) -> int:
        if self.left < 1:
            raise UpdateRejected(f"{self.what} is truncated at {name!r}")
        self.at += 1
        return self.data[self.at - 1]

    def uint(self, name: str) -> int:
        value = 0
        for i in range(_MAX_VARINT_BYTES):
            b = self.byte(name)
            value |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                if b == 0 and i > 0:
                    raise UpdateRejected(f"{self.what}: {name!r} is not a minimal varint")
                if value > MAX_UINT:
                    raise UpdateRejected(f"{self.what}: {name!r} exceeds 2**64 - 1")
                return value
        raise UpdateRejected(f"{self.what}: {name!r} is a varint longer than 10 bytes")

    def count(self, name: str) -> int:
        """A list length; each item takes at least one byte, so a count beyond the bytes
        left is rejected before anything is allocated."""
        n = self.uint(name)
        if n > self.left:
            raise UpdateRejected(f"{self.what}: {name!r} claims {n} items in {self.left} bytes")
        return n

    def raw(self, size: int, name: str) -> bytes:
        if size > self.left:
            raise UpdateRejected(f"{self.what} is truncated in {name!r}")
        self.at += size
        return self.data[self.at - size : self.at]

    def blob(self, name: str) -> bytes:
        return self.raw(self.uint(name), name)

    def rest(self) -> bytes:
        out, self.at = self.data[self.at :], len(self.data)
        return out

    def end(self) -> None:
        if self.left:
            raise UpdateRejected(f"{self.what} has {self.left} trailing bytes")
