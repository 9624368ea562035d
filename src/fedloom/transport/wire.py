"""The versioned wire frame: magic, header length, JSON header, then the payload bytes.

    b"FLM1" | uint32 little-endian header length | UTF-8 JSON header | payload

The header holds kind, round, sender and meta. Nothing is ever unpickled.
"""

from __future__ import annotations

from typing import Any

from fedloom.core.errors import UpdateRejected
from fedloom.core.framing import dump_header, framed_size, pack_prefix, read_header
from fedloom.core.message import Message

MAGIC = b"FLM1"
_KINDS = ("fit", "fit_result", "error")


def _header(message: Message) -> bytes:
    header: dict[str, Any] = {
        "kind": message.kind,
        "round": message.round,
        "sender": message.sender,
        "meta": message.meta,
    }
    return dump_header(header, sort_keys=True)


def frame_size(message: Message) -> int:
    """Exact size in bytes of ``encode_message(message)``, without building it."""
    return framed_size(_header(message), len(message.payload))


def encode_message(message: Message) -> bytes:
    return pack_prefix(MAGIC, _header(message)) + message.payload


def decode_message(frame: bytes | bytearray) -> Message:
    """Parse a frame; anything malformed raises ``UpdateRejected`` with the reason."""
    header, offset = read_header(frame, MAGIC, "frame")
    try:
        kind, rnd, sender, meta = (header[k] for k in ("kind", "round", "sender", "meta"))
    except (ValueError, KeyError, TypeError) as error:
        raise UpdateRejected(f"malformed header: {error}") from None
    if kind not in _KINDS or not isinstance(rnd, int) or not isinstance(sender, str):
        raise UpdateRejected("header fields kind/round/sender have the wrong type")
    if not isinstance(meta, dict):
        raise UpdateRejected("header meta must be a JSON object")
    return Message(kind, rnd, sender, bytes(memoryview(frame)[offset:]), meta)
