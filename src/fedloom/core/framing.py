"""Magic-tagged byte frames with a JSON header, shared by the wire format and the codecs.

    MAGIC (4 bytes) | uint32 little-endian header length | UTF-8 JSON header | body

Reading checks the length before it slices or parses anything, so a hostile frame can
neither make the reader allocate nor raise anything but ``UpdateRejected``.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from fedloom.core.errors import UpdateRejected

PREFIX = struct.Struct("<4sI")
MAX_HEADER_BYTES = 1 << 20


def dump_header(header: Any, *, sort_keys: bool = False) -> bytes:
    return json.dumps(header, separators=(",", ":"), sort_keys=sort_keys).encode()


def pack_prefix(magic: bytes, header: bytes) -> bytes:
    """The magic, the header's length and the header: what precedes the body."""
    return PREFIX.pack(magic, len(header)) + header


def framed_size(header: bytes, body_bytes: int) -> int:
    return PREFIX.size + len(header) + body_bytes


def read_header(data: bytes | bytearray, magic: bytes, what: str) -> tuple[Any, int]:
    """Parse ``data``'s JSON header; returns it and the offset where the body starts."""
    if len(data) < PREFIX.size:
        raise UpdateRejected(f"{what} of {len(data)} bytes is shorter than its prefix")
    found, length = PREFIX.unpack_from(data)
    if found != magic:
        raise UpdateRejected(f"bad {what} magic {found!r}; expected {magic!r}")
    if length > MAX_HEADER_BYTES or PREFIX.size + length > len(data):
        raise UpdateRejected(
            f"{what} header length {length} does not fit a {len(data)}-byte {what}"
        )
    try:
        header = json.loads(data[PREFIX.size : PREFIX.size + length])
    except ValueError as error:
        raise UpdateRejected(f"{what} header is not JSON: {error}") from None
    return header, PREFIX.size + length
