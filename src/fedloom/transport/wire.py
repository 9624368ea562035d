"""The versioned wire frame: magic, header length, JSON header, then the payload bytes.

    b"FLM1" | uint32 little-endian header length | UTF-8 JSON header | payload

The header holds kind, round, sender and meta, and nothing else; it is at most
``MAX_HEADER_BYTES`` (64 KiB) long, ``fedloom.core.framing.MAX_DEPTH`` deep, and holds no
non-finite or oversized number. Nothing is ever unpickled.
"""

from __future__ import annotations

from typing import Any, cast

from fedloom.core.errors import UpdateRejected
from fedloom.core.framing import dump_header, framed_size, pack_prefix, read_header
from fedloom.core.message import Kind, Message, payload_bytes

MAGIC = b"FLM1"
MAX_HEADER_BYTES = 64 * 1024
MAX_SENDER_CHARS = 256
_KINDS = ("fit", "fit_result", "error", "secagg", "secagg_result", "ckks_result")
_FIELDS = frozenset(("kind", "round", "sender", "meta"))


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
    return pack_prefix(MAGIC, _header(message)) + payload_bytes(message.payload)


def decode_message(frame: bytes | bytearray | memoryview) -> Message:
    """Parse a frame; anything malformed raises ``UpdateRejected`` with the reason."""
    header, offset = read_header(frame, MAGIC, "frame", MAX_HEADER_BYTES)
    kind, rnd, sender, meta = _fields(header)
    return Message(kind, rnd, sender, memoryview(frame)[offset:], meta)


def _fields(header: Any) -> tuple[Kind, int, str, dict[str, Any]]:
    """The header's four fields, each of its type, or ``UpdateRejected``."""
    if not isinstance(header, dict):
        raise UpdateRejected(f"frame header must be a JSON object, got {type(header).__name__}")
    if header.keys() != _FIELDS:
        got = sorted(header)[:8]
        raise UpdateRejected(f"frame header must have the fields {sorted(_FIELDS)}, got {got}")
    kind, rnd, sender, meta = (header[k] for k in ("kind", "round", "sender", "meta"))
    if kind not in _KINDS:
        raise UpdateRejected(f"frame kind must be one of {list(_KINDS)}, got {str(kind)[:40]!r}")
    if type(rnd) is not int or rnd < 0:
        raise UpdateRejected(f"frame round must be a non-negative integer, got {str(rnd)[:40]}")
    if not isinstance(sender, str) or not 0 < len(sender) <= MAX_SENDER_CHARS:
        raise UpdateRejected(f"frame sender must be a string of 1 to {MAX_SENDER_CHARS} chars")
    if not isinstance(meta, dict):
        raise UpdateRejected("frame meta must be a JSON object")
    return cast(Kind, kind), rnd, sender, meta
