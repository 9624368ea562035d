"""The compressed payload and the codec that writes it.

    b"FLZ1" | uint32 LE header length | JSON header | body

The header lists ``[name, dtype, shape]`` per tensor, nothing else: how many values,
indices and scales each tensor has follows from its size and the codec's own spec, which
the decoder takes from its configuration, never from the sender. A sparsifier with a
density warm-up keeps a share that depends on the round, so its entries are
``[name, dtype, shape, k]``: the decoder accepts any k its own schedule can produce
(between the spec's k and the warm-up's largest). The body must then have exactly the
expected length, so a forged shape cannot make the decoder allocate more than the bytes
it was given. Nothing is unpickled; every malformed input is ``UpdateRejected``.
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
from fedloom.core.codec import CodecContext, DTypes, Key, Shapes, Warmup, key_round
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

    def __init__(
        self,
        spec: str | Spec,
        *,
        seed: int,
        chunk: int | None = None,
        warmup: Warmup | None = None,
    ) -> None:
        self.spec = parse_spec(spec) if isinstance(spec, str) else spec
        self.name = spec if isinstance(spec, str) else repr(spec)
        self.seed = seed
        self.chunk = chunk
        self.quantizer = QUANTIZER_REGISTRY[self.spec.quantizer]
        self.sparse = self.spec.sparsifier is not None
        fraction = self.spec.fraction
        # a schedule that never exceeds the spec's fraction changes nothing, wire included
        ramps = self.sparse and warmup is not None and warmup.largest(fraction) > fraction
        self.warmup = warmup if ramps else None

    def density(self, key: Key = ()) -> float:
        """The share of each tensor this encode keeps: the warm-up's for the key's round."""
        if self.warmup is None:
            return self.spec.fraction
        return self.warmup.density(self.spec.fraction, key_round(key))

    def kept_range(self, numel: int) -> tuple[int, int]:
        """The fewest and the most entries of a tensor any encode keeps."""
        if not self.sparse:
            return numel, numel
        fraction = self.spec.fraction
        largest = fraction if self.warmup is None else self.warmup.largest(fraction)
        return kept(numel, fraction), kept(numel, largest)

    def layout(self, numel: int, k: int | None = None) -> Layout:
        """Where a tensor of ``numel`` entries sits, with ``k`` kept (default: the spec's)."""
        if not self.sparse:
            return Layout(numel, numel, 0, self.quantizer.nbytes(numel, self.chunk))
        k = kept(numel, self.spec.fraction) if k is None else k
        return Layout(numel, k, k * index_width(numel), self.quantizer.nbytes(k, self.chunk))

    def encoded_size(self, tensors: Tensors, key: Key = ()) -> int:
        """The exact ``len(encode(tensors, key))``, without encoding."""
        ks = self._kept(tensors, key)
        body = sum(self.layout(t.numel(), ks[name]).size for name, t in tensors.items())
        return framed_size(self._header(tensors, ks), body)

    def max_encoded_bytes(self, shapes: Shapes, dtypes: DTypes) -> int:
        """The largest encoded size of an update of these shapes (and float dtypes): the
        exact size at the largest density the warm-up can produce."""
        # a dtype the codec cannot encode gets the longest name: still an upper bound
        names = {name: _DTYPE_NAMES.get(dtypes[name], "bfloat16") for name in shapes}
        most = {name: self.kept_range(math.prod(shape))[1] for name, shape in shapes.items()}
        entries = [
            [name, names[name], list(shape), *self._k_field(most[name])]
            for name, shape in shapes.items()
        ]
        body = sum(self.layout(math.prod(s), most[name]).size for name, s in shapes.items())
        return framed_size(dump_header(entries), body)

    def encode(self, tensors: Tensors, key: Key = ()) -> bytes:
        ks = self._kept(tensors, key)
        parts = [pack_prefix(MAGIC, self._header(tensors, ks))]
        for name, t in tensors.items():
            # one stream per tensor: the draws do not depend on the order of the dict
            gen = generator(self.seed, "codec", *key, name)
            parts.append(self._encode_tensor(t.detach().flatten().float(), ks[name], gen))
        return b"".join(parts)

    def _kept(self, tensors: Tensors, key: Key) -> dict[str, int]:
        if not self.sparse:
            return {name: t.numel() for name, t in tensors.items()}
        density = self.density(key)
        return {name: kept(t.numel(), density) for name, t in tensors.items()}

    def _k_field(self, k: int) -> list[int]:
        """What a header entry says of k: nothing unless the density varies by round."""
        return [] if self.warmup is None else [k]

    def _header(self, tensors: Tensors, ks: dict[str, int]) -> bytes:
        entries = [
            [name, _dtype_name(t), list(t.shape), *self._k_field(ks[name])]
            for name, t in tensors.items()
        ]
        return dump_header(entries)

    def _encode_tensor(self, flat: Tensor, k: int, gen: torch.Generator) -> bytes:
        lay = self.layout(flat.numel(), k)
        if self.spec.sparsifier is None:
            return self.quantizer.encode(flat, self.chunk, gen)
        idx = SELECTORS[self.spec.sparsifier](flat, lay.kept, gen)
        return pack_indices(idx, lay.numel) + self.quantizer.encode(flat[idx], self.chunk, gen)

    def decode(self, data: Payload) -> Tensors:
        view = memoryview(data)
        data = (view if view.c_contiguous else memoryview(view.tobytes())).cast("B")
        entries, offset = _read_header(data, self.warmup is not None)
        layouts = [self._checked_layout(name, shape, k) for name, _, shape, k in entries]
        expected = offset + sum(lay.size for lay in layouts)
        if expected != len(data):
            raise UpdateRejected(f"payload has {len(data)} bytes, its header implies {expected}")
        out: Tensors = {}
        for (name, dtype, shape, _), lay in zip(entries, layouts, strict=True):
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

    def _checked_layout(self, name: str, shape: list[int], k: int | None) -> Layout:
        numel = math.prod(shape)
        fewest, most = self.kept_range(numel)
        if k is not None and not fewest <= k <= most:
            raise UpdateRejected(f"{name}: {k} kept entries, this codec keeps {fewest}..{most}")
        return self.layout(numel, k)


def spec_codec(arg: str | None, ctx: CodecContext) -> SpecCodec:
    """The registered spec codecs (``int8``, ``topk``, ...): ``arg`` is the whole spec text,
    e.g. ``"topk:0.01+int8"`` (``fedloom.compression.select.build_codec`` passes it)."""
    if arg is None:
        raise ValueError("a spec codec needs its spec text, e.g. 'int8' or 'topk:0.01+int8'")
    return SpecCodec(arg, seed=ctx.seed, chunk=ctx.chunk, warmup=ctx.warmup)


def _dtype_name(t: Tensor) -> str:
    if t.dtype not in _DTYPE_NAMES:
        raise TypeError(f"cannot compress a {t.dtype} tensor; floating-point tensors only")
    return _DTYPE_NAMES[t.dtype]


Entry = tuple[str, str, list[int], int | None]
"""name, dtype, shape, and k when the codec's density varies by round (else None)."""


def _read_header(data: memoryview, with_k: bool) -> tuple[list[Entry], int]:
    raw, offset = read_header(data, MAGIC, "codec")
    return _check_entries(raw, with_k), offset


def _valid_entry(entry: Any, seen: set[str], with_k: bool) -> bool:
    if not (isinstance(entry, list) and len(entry) == 3 + with_k):
        return False
    if with_k and type(entry[3]) is not int:
        return False
    name, dtype, shape = entry[:3]
    return (
        isinstance(name, str)
        and name not in seen
        and isinstance(dtype, str)
        and dtype in DTYPES
        and isinstance(shape, list)
        and len(shape) <= MAX_DIMS
        and all(type(d) is int and 0 <= d < 1 << 31 for d in shape)
    )


def _check_entries(raw: Any, with_k: bool) -> list[Entry]:
    if not isinstance(raw, list):
        fields = "name, dtype, shape, k" if with_k else "name, dtype, shape"
        raise UpdateRejected(f"codec header must be a list of [{fields}]")
    entries: list[Entry] = []
    seen: set[str] = set()
    for entry in raw:
        if not _valid_entry(entry, seen, with_k):
            raise UpdateRejected(f"malformed codec header entry {str(entry)[:80]}")
        seen.add(entry[0])
        entries.append((entry[0], entry[1], entry[2], entry[3] if with_k else None))
    return entries
