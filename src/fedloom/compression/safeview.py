"""Read a safetensors blob held in a writable buffer as tensors that share its memory.

``safetensors.torch.load`` takes ``bytes`` and copies every tensor out of it, so a received
update would briefly cost three times its size (the frame, ``bytes`` of it, the tensors).
A frame received from the network is a ``bytearray`` that nobody else holds: its tensors
can be views of it. The checks are those of the safetensors format itself: the header is
a JSON object of ``{dtype, shape, data_offsets}`` entries whose byte ranges tile the body
exactly, in order, without gaps or overlaps; anything else is ``UpdateRejected``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any

import torch

from fedloom.core.errors import UpdateRejected
from fedloom.core.framing import parse_json
from fedloom.core.tensors import Tensors

MAX_HEADER_BYTES = 4 << 20
"""Longest JSON header read (safetensors itself allows 100 MB). 4 MiB lists some 25,000
tensors; a hostile header parses into objects some 30x its size, so this bounds that too."""
MAX_DIMS = 8
"""Most dimensions a tensor may have."""
MAX_DIM = 1 << 40
"""Largest single dimension."""

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
CODES = {dtype: code for code, dtype in DTYPES.items()}
_U64 = struct.Struct("<Q")


def tensors_view(buffer: bytearray | memoryview) -> Tensors:
    """The tensors of the safetensors blob in ``buffer``, sharing its memory (no copy, but
    for a tensor that would start at an address misaligned for its dtype)."""
    view = memoryview(buffer).cast("B")
    if view.readonly:
        raise ValueError("tensors_view needs a writable buffer; use safetensors.torch.load")
    entries, start = _read_header(view)
    out: Tensors = {}
    for name, (dtype, shape, begin, end) in entries.items():
        if begin == end:
            out[name] = torch.empty(shape, dtype=dtype)
        else:
            t = torch.frombuffer(view[start + begin : start + end], dtype=dtype).view(shape)
            # a misaligned view would be legal but slow or unsafe for some kernels: copy it
            out[name] = t if t.data_ptr() % dtype.itemsize == 0 else t.clone()
    return out


Entry = tuple[torch.dtype, list[int], int, int]
"""dtype, shape, and the [begin, end) of its bytes in the body."""


def _read_header(view: memoryview) -> tuple[dict[str, Entry], int]:
    if len(view) < _U64.size:
        raise UpdateRejected(f"safetensors blob of {len(view)} bytes has no header length")
    (length,) = _U64.unpack_from(view)
    if length > min(MAX_HEADER_BYTES, len(view) - _U64.size):
        raise UpdateRejected(f"safetensors header length {length} does not fit the blob")
    raw = parse_json(bytes(view[_U64.size : _U64.size + length]), "safetensors")
    if not isinstance(raw, dict):
        raise UpdateRejected("safetensors header must be a JSON object")
    metadata = raw.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise UpdateRejected("safetensors __metadata__ must map strings to strings")
    entries = {name: _entry(name, value) for name, value in raw.items()}
    body = len(view) - _U64.size - length
    _check_tiling(entries, body)
    return entries, _U64.size + length


def _entry(name: str, value: Any) -> Entry:
    try:
        code, shape, offsets = value["dtype"], value["shape"], value["data_offsets"]
    except (KeyError, TypeError):
        raise UpdateRejected(f"safetensors entry {name[:64]!r} is malformed") from None
    if (
        not isinstance(code, str)
        or code not in DTYPES
        or not isinstance(shape, list)
        or len(shape) > MAX_DIMS
        or not all(type(d) is int and 0 <= d <= MAX_DIM for d in shape)
        or not (isinstance(offsets, list) and len(offsets) == 2)
        or not all(type(o) is int and o >= 0 for o in offsets)
    ):
        raise UpdateRejected(f"safetensors entry {name[:64]!r} is malformed")
    dtype = DTYPES[code]
    begin, end = offsets
    # at most MAX_DIMS factors below 2**40 each: the product is cheap whatever they are
    if end - begin != math.prod(shape) * dtype.itemsize:
        raise UpdateRejected(f"safetensors entry {name[:64]!r}: offsets do not match its shape")
    return dtype, shape, begin, end


def _check_tiling(entries: dict[str, Entry], body: int) -> None:
    position = 0
    for _, _, begin, end in sorted(entries.values(), key=lambda e: (e[2], e[3])):
        if begin != position:
            raise UpdateRejected("safetensors tensors overlap or leave a gap")
        position = end
    if position != body:
        raise UpdateRejected(f"safetensors body has {body} bytes, its header covers {position}")


def max_blob_bytes(shapes: Mapping[str, tuple[int, ...]], dtypes: Mapping[str, torch.dtype]) -> int:
    """An upper bound on ``len(safetensors.torch.save(t))`` for tensors of these shapes."""
    header = 2  # the braces
    body = 0
    for name, shape in shapes.items():
        dtype = dtypes[name]
        nbytes = math.prod(shape) * dtype.itemsize
        body += nbytes
        # "name":{"dtype":"BF16","shape":[..],"data_offsets":[b,e]}, with every number at
        # most 20 digits and each character of the name at most 6 once escaped
        header += 2 + 6 * len(name) + 64 + 21 * (len(shape) + 2)
    return _U64.size + header + 8 + body  # the header is padded to a multiple of 8
