"""The compressed payload and the codec that writes it.

    b"FLZ1" | uint32 LE header length | JSON header | body

The header lists ``[name, dtype, shape]`` per tensor, nothing else: how many values,
indices and scales each tensor has follows from its size and the codec's own spec, which
the decoder takes from its configuration, never from the sender. The body must then have
exactly the expected length, so a forged shape cannot make the decoder allocate more than
the bytes it was given. Nothing is unpickled; every malformed input is ``UpdateRejected``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fedloom.compression.quantize import QUANTIZER_REGISTRY
from fedloom.compression.sparsify import SELECTORS, index_width, kept, pack_indices, unpack_indices
from fedloom.compression.spec import Spec, parse_spec
from fedloom.core.codec import CodecContext, DTypes, Key, Shapes
from fedloom.core.errors import UpdateRejected
from fedloom.core.framing import dump_header, framed_size, pack_prefix, read_header
from fedloom.core.message import Payload
from fedloom.core.seeding import generator
from fedloom.core.tensors import Tensors

MAGIC = b"FLZ1"
MAX_DIMS = 8
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


@dataclass(frozen=True)
class Layout:
    """Where one tensor's parts sit in the body."""

    numel: int
    kept: int
    index_bytes: int
    value_bytes: int

    @property
    def size(self) -> int:
        return self.index_bytes + self.value_bytes


class SpecCodec:
    """Sparsify (optional), then quantize each named tensor, as ``spec`` says."""

    def __init__(self, spec: str | Spec, *, seed: int, chunk: int | None = None) -> None:
        self.spec = parse_spec(spec) if isinstance(spec, str) else spec
        self.name = spec if isinstance(spec, str) else repr(spec)
        self.seed = seed
        self.chunk = chunk
        self.quantizer = QUANTIZER_REGISTRY[self.spec.quantizer]

    def layout(self, numel: int) -> Layout:
        sparse = self.spec.sparsifier is not None
        k = kept(numel, self.spec.fraction) if sparse else numel
        index_bytes = k * index_width(numel) if sparse else 0
        return Layout(numel, k, index_bytes, self.quantizer.nbytes(k, self.chunk))

    def encoded_size(self, tensors: Tensors) -> int:
        """The exact ``len(encode(tensors))``, without encoding."""
        header = _header_bytes(tensors)
        body = sum(self.layout(t.numel()).size for t in tensors.values())
        return framed_size(header, body)

    def max_encoded_bytes(self, shapes: Shapes, dtypes: DTypes) -> int:
        """The exact encoded size of any update of these shapes (and float dtypes)."""
        # a dtype the codec cannot encode gets the longest name: still an upper bound
        names = {name: _DTYPE_NAMES.get(dtypes[name], "bfloat16") for name in shapes}
        entries = [[name, names[name], list(shape)] for name, shape in shapes.items()]
        body = sum(self.layout(math.prod(shape)).size for shape in shapes.values())
        return framed_size(dump_header(entries), body)

    def encode(self, tensors: Tensors, key: Key = ()) -> bytes:
        header = _header_bytes(tensors)
        parts = [pack_prefix(MAGIC, header)]
        for name, t in tensors.items():
            # one stream per tensor: the draws do not depend on the order of the dict
            gen = generator(self.seed, "codec", *key, name)
            parts.append(self._encode_tensor(t.detach().flatten().float(), gen))
        return b"".join(parts)

    def _encode_tensor(self, flat: Tensor, gen: torch.Generator) -> bytes:
        lay = self.layout(flat.numel())
        if self.spec.sparsifier is None:
            return self.quantizer.encode(flat, self.chunk, gen)
        idx = SELECTORS[self.spec.sparsifier](flat, lay.kept, gen)
        return pack_indices(idx, lay.numel) + self.quantizer.encode(flat[idx], self.chunk, gen)

    def decode(self, data: Payload) -> Tensors:
        view = memoryview(data)
        data = (view if view.c_contiguous else memoryview(view.tobytes())).cast("B")
        entries, offset = _read_header(data)
        layouts = [self.layout(math.prod(shape)) for _, _, shape in entries]
        expected = offset + sum(lay.size for lay in layouts)
        if expected != len(data):
            raise UpdateRejected(f"payload has {len(data)} bytes, its header implies {expected}")
        out: Tensors = {}
        for (name, dtype, shape), lay in zip(entries, layouts, strict=True):
            chunk = data[offset : offset + lay.size]
            out[name] = self._decode_tensor(chunk, lay).view(shape).to(DTYPES[dtype])
            offset += lay.size
        return out

    def _decode_tensor(self, buf: memoryview, lay: Layout) -> Tensor:
        values = self.quantizer.decode(buf[lay.index_bytes :], lay.kept, self.chunk)
        if self.spec.sparsifier is None:
            return values
        idx = unpack_indices(buf[: lay.index_bytes], lay.kept, lay.numel)
        dense = torch.zeros(lay.numel, dtype=torch.float32)
        dense[idx] = values
        return dense


def spec_codec(arg: str | None, ctx: CodecContext) -> SpecCodec:
    """The registered spec codecs (``int8``, ``topk``, ...): ``arg`` is the whole spec text,
    e.g. ``"topk:0.01+int8"`` (``fedloom.compression.select.build_codec`` passes it)."""
    if arg is None:
        raise ValueError("a spec codec needs its spec text, e.g. 'int8' or 'topk:0.01+int8'")
    return SpecCodec(arg, seed=ctx.seed, chunk=ctx.chunk)


def _header_bytes(tensors: Tensors) -> bytes:
    entries = [[name, _dtype_name(t), list(t.shape)] for name, t in tensors.items()]
    return dump_header(entries)


def _dtype_name(t: Tensor) -> str:
    if t.dtype not in _DTYPE_NAMES:
        raise TypeError(f"cannot compress a {t.dtype} tensor; floating-point tensors only")
    return _DTYPE_NAMES[t.dtype]


def _read_header(data: memoryview) -> tuple[list[tuple[str, str, list[int]]], int]:
    raw, offset = read_header(data, MAGIC, "codec")
    return _check_entries(raw), offset


def _valid_entry(entry: Any, seen: set[str]) -> bool:
    if not (isinstance(entry, list) and len(entry) == 3):
        return False
    name, dtype, shape = entry
    return (
        isinstance(name, str)
        and name not in seen
        and isinstance(dtype, str)
        and dtype in DTYPES
        and isinstance(shape, list)
        and len(shape) <= MAX_DIMS
        and all(type(d) is int and 0 <= d < 1 << 31 for d in shape)
    )


def _check_entries(raw: Any) -> list[tuple[str, str, list[int]]]:
    if not isinstance(raw, list):
        raise UpdateRejected("codec header must be a list of [name, dtype, shape]")
    entries: list[tuple[str, str, list[int]]] = []
    seen: set[str] = set()
    for entry in raw:
        if not _valid_entry(entry, seen):
            raise UpdateRejected(f"malformed codec header entry {str(entry)[:80]}")
        seen.add(entry[0])
        entries.append((entry[0], entry[1], entry[2]))
    return entries
