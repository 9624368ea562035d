"""Magic-tagged byte frames with a JSON header, shared by the wire format and the codecs.

    MAGIC (4 bytes) | uint32 little-endian header length | UTF-8 JSON header | body

Reading checks the length before it slices or parses anything, and the header's nesting
depth before ``json.loads`` can recurse, so a hostile frame can neither make the reader
allocate nor raise anything but ``UpdateRejected``. A header holds only finite numbers and
integers that fit in 64 bits: NaN, Infinity, ``1e999`` and ``10**400`` are refused.
"""

from __future__ import annotations

import json
import math
import re
import struct
from typing import Any

from fedloom.core.errors import UpdateRejected

PREFIX = struct.Struct("<4sI")
MAX_HEADER_BYTES = 1 << 20
"""Default header limit (the codecs' header lists every tensor: it may be long)."""
MAX_DEPTH = 32
"""Deepest nesting of JSON arrays and objects a header may have."""
MAX_INT = 1 << 63
"""Header integers lie in ``(-MAX_INT, MAX_INT)``: anything larger is an attack."""

# a complete JSON string literal; brackets inside one do not nest anything
# (possessive: backtracking state would cost ~100 bytes per character of a long string)
_STRING = re.compile(r'"(?:[^"\\]++|\\(?:.|\Z))*+(?:"|\Z)', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


def dump_header(header: Any, *, sort_keys: bool = False) -> bytes:
    return json.dumps(header, separators=(",", ":"), sort_keys=sort_keys).encode()


def pack_prefix(magic: bytes, header: bytes) -> bytes:
    """The magic, the header's length and the header: what precedes the body."""
    return PREFIX.pack(magic, len(header)) + header


def framed_size(header: bytes, body_bytes: int) -> int:
    return PREFIX.size + len(header) + body_bytes


def nesting_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """Deepest bracket nesting of a JSON text outside its strings; stops once past ``limit``.

    Linear in ``len(text)``. An unterminated string hides the rest of the text, which
    ``json.loads`` never reaches either: it fails on that string first.
    """
    brackets = _NOT_BRACKETS.sub("", _STRING.sub('""', text))
    opening = brackets.count("[") + brackets.count("{")
    if opening <= limit:
        return opening  # an upper bound, exact enough to pass
    depth = deepest = 0
    for b in brackets:
        depth += 1 if b in "[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest


def parse_json(data: bytes, what: str, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` for hostile input: one ``UpdateRejected`` for every way it can fail."""
    try:
        text = data.decode("utf-8")  # strictly: json.loads would also guess UTF-16 or -32
    except UnicodeDecodeError as error:
        raise UpdateRejected(f"{what} header is not UTF-8: {error}") from None
    if nesting_depth(text, max_depth) > max_depth:
        raise UpdateRejected(f"{what} header is nested deeper than {max_depth} levels")
    try:
        return json.loads(
            text, parse_constant=_refuse_constant, parse_float=_finite, parse_int=_bounded
        )
    except UpdateRejected:
        raise
    except (ValueError, RecursionError) as error:
        raise UpdateRejected(f"{what} header is not JSON: {str(error)[:200]}") from None


def _refuse_constant(name: str) -> Any:
    raise UpdateRejected(f"non-finite number {name} in a header")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UpdateRejected(f"number {text[:40]} overflows a float")
    return value


def _bounded(text: str) -> int:
    if len(text) > 20:  # 2**63 has 19 digits: refuse before int() parses thousands
        raise UpdateRejected(f"integer of {len(text)} digits in a header")
    value = int(text)
    if not -MAX_INT < value < MAX_INT:
        raise UpdateRejected(f"integer {value} in a header does not fit in 64 bits")
    return value


def read_header(
    data: bytes | bytearray | memoryview,
    magic: bytes,
    what: str,
    max_header_bytes: int = MAX_HEADER_BYTES,
) -> tuple[Any, int]:
    """Parse ``data``'s JSON header; returns it and the offset where the body starts."""
    if len(data) < PREFIX.size:
        raise UpdateRejected(f"{what} of {len(data)} bytes is shorter than its prefix")
    found, length = PREFIX.unpack_from(data)
    if found != magic:
        raise UpdateRejected(f"bad {what} magic {found!r}; expected {magic!r}")
    if length > max_header_bytes:
        raise UpdateRejected(
            f"{what} header length {length} does not fit the {max_header_bytes}-byte limit"
        )
    if PREFIX.size + length > len(data):
        raise UpdateRejected(
            f"{what} header length {length} does not fit a {len(data)}-byte {what}"
        )
    header = parse_json(bytes(data[PREFIX.size : PREFIX.size + length]), what)
    return header, PREFIX.size + length
