"""The versioned wire frame: magic, header length, JSON header, then the payload bytes.

    b"FLM1" | uint32 little-endian header length | UTF-8 JSON header | payload

The header holds kind, round, sender and meta. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from fedloom.core.errors import UpdateRejected
from fedloom.core.message import Message

MAGIC = b"FLM1"
_PREFIX = struct.Struct("<4sI")
MAX_HEADER_BYTES = 1 << 20
_KINDS = ("fit", "fit_result", "error")


def _header(message: Message) -> bytes:
    header: dict[str, Any] = {
        "kind": message.kind,
        "round": message.round,
        "sender": message.sender,
        "meta": message.meta,
    }
    return json.dumps(header, separators=(",", ":"), sort_keys=True).encode()


def frame_size(message: Message) -> int:
    """Exact size in bytes of ``encode_message(message)``, without building it."""
    return _PREFIX.size + len(_header(message)) + len(message.payload)


def encode_message(message: Message) -> bytes:
    header = _header(message)
    return _PREFIX.pack(MAGIC, len(header)) + header + message.payload


def decode_message(frame: bytes) -> Message:
    """Parse a frame; anything malformed raises ``UpdateRejected`` with the reason."""
    if len(frame) < _PREFIX.size:
        raise UpdateRejected(f"frame of {len(frame)} bytes is shorter than its prefix")
    magic, length = _PREFIX.unpack_from(frame)
    if magic != MAGIC:
        raise UpdateRejected(f"bad magic {magic!r}; expected {MAGIC!r}")
    if length > MAX_HEADER_BYTES or _PREFIX.size + length > len(frame):
        raise UpdateRejected(f"header length {length} does not fit a {len(frame)}-byte frame")
    try:
        header = json.loads(frame[_PREFIX.size : _PREFIX.size + length])
        kind, rnd, sender, meta = (header[k] for k in ("kind", "round", "sender", "meta"))
    except (ValueError, KeyError, TypeError) as error:
        raise UpdateRejected(f"malformed header: {error}") from None
    if kind not in _KINDS or not isinstance(rnd, int) or not isinstance(sender, str):
        raise UpdateRejected("header fields kind/round/sender have the wrong type")
    if not isinstance(meta, dict):
        raise UpdateRejected("header meta must be a JSON object")
    return Message(kind, rnd, sender, bytes(frame[_PREFIX.size + length :]), meta)
