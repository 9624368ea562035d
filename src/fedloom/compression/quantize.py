"""Value quantizers: a 1-D float tensor to bytes and back, with sizes known in advance.

``int8`` and ``int4`` are symmetric with one float32 scale per chunk (or per tensor) and
*stochastic* rounding: x/scale is rounded up with probability equal to its fractional
part, so the decoded value is an unbiased estimate of the input (QSGD-style). The uniform
draws come from the generator the caller passes, keyed by (seed, round, client).
All integers are little-endian; a decoder checks every value it reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fedloom.core.errors import UpdateRejected


@dataclass(frozen=True)
class Quantizer:
    name: str
    nbytes: Callable[[int, int | None], int]
    """(number of values, chunk) -> exact encoded size."""
    encode: Callable[[Tensor, int | None, torch.Generator], bytes]
    decode: Callable[[memoryview, int, int | None], Tensor]


def _float_codec(dtype: torch.dtype, width: int, carrier: torch.dtype) -> Quantizer:
    """Cast to ``dtype`` and write the raw bits (bf16 travels through an int16 view)."""

    def encode(values: Tensor, chunk: int | None, gen: torch.Generator) -> bytes:
        return values.to(dtype).contiguous().view(carrier).numpy().tobytes()

    def decode(buf: memoryview, k: int, chunk: int | None) -> Tensor:
        raw = (
            torch.frombuffer(bytearray(buf), dtype=carrier) if k else torch.empty(0, dtype=carrier)
        )
        return raw.view(dtype).float()

    name = {torch.float32: "f32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    return Quantizer(name, lambda k, chunk: k * width, encode, decode)


def _num_chunks(k: int, chunk: int | None) -> int:
    return 0 if k == 0 else math.ceil(k / (chunk or k))


def stochastic_round(x: Tensor, gen: torch.Generator) -> Tensor:
    """Round each entry down or up so that the expected result is ``x`` itself."""
    low = torch.floor(x)
    return low + (torch.rand(x.shape, generator=gen, dtype=x.dtype) < (x - low)).to(x.dtype)


def _scales(values: Tensor, k: int, chunk: int | None, levels: int) -> tuple[Tensor, Tensor]:
    """Per-chunk scale max|v|/levels, and each value's scale (padding is never read)."""
    size = chunk or k
    n_chunks = _num_chunks(k, chunk)
    padded = torch.zeros(n_chunks * size, dtype=torch.float32)
    padded[:k] = values.float()
    scale = padded.view(n_chunks, size).abs().amax(dim=1) / levels
    return scale, scale.repeat_interleave(size)[:k]


def _int_codec(name: str, levels: int, bits: int) -> Quantizer:
    def nbytes(k: int, chunk: int | None) -> int:
        return 4 * _num_chunks(k, chunk) + math.ceil(k * bits / 8)

    def encode(values: Tensor, chunk: int | None, gen: torch.Generator) -> bytes:
        k = values.numel()
        if k == 0:  # an empty tensor (or nothing kept) costs no bytes: nbytes(0) == 0
            return b""
        scale, per_value = _scales(values, k, chunk, levels)
        safe = torch.where(per_value > 0, per_value, torch.ones_like(per_value))
        q = stochastic_round(values.float() / safe, gen).clamp_(-levels, levels).to(torch.int16)
        return scale.numpy().tobytes() + _pack(q, bits)

    def decode(buf: memoryview, k: int, chunk: int | None) -> Tensor:
        n_chunks = _num_chunks(k, chunk)
        scale = torch.from_numpy(np.frombuffer(buf, dtype="<f4", count=n_chunks).copy())
        if not bool(torch.isfinite(scale).all()) or bool((scale < 0).any()):
            raise UpdateRejected(f"{name}: a quantization scale is negative or not finite")
        q = _unpack(buf[4 * n_chunks :], k, bits)
        if bool((q.abs() > levels).any()):
            raise UpdateRejected(f"{name}: a quantized value lies outside ±{levels}")
        return q.float() * scale.repeat_interleave(chunk or k)[:k]

    return Quantizer(name, nbytes, encode, decode)


def _pack(q: Tensor, bits: int) -> bytes:
    if bits == 8:
        return q.to(torch.int8).numpy().tobytes()
    # int4: q + 8 in 1..15, two per byte, low nibble first; an odd count pads with 0
    nibbles = (q + 8).to(torch.uint8)
    if nibbles.numel() % 2:
        nibbles = torch.cat([nibbles, torch.zeros(1, dtype=torch.uint8)])
    pairs = nibbles.view(-1, 2)
    return (pairs[:, 0] | (pairs[:, 1] << 4)).numpy().tobytes()


def _unpack(buf: memoryview, k: int, bits: int) -> Tensor:
    if bits == 8:
        return torch.from_numpy(np.frombuffer(buf, dtype=np.int8, count=k).astype(np.int16))
    packed = torch.from_numpy(np.frombuffer(buf, dtype=np.uint8).copy())
    nibbles = torch.stack([packed & 0x0F, packed >> 4], dim=1).flatten()[:k]
    return nibbles.to(torch.int16) - 8


QUANTIZER_REGISTRY: dict[str, Quantizer] = {
    "f32": _float_codec(torch.float32, 4, torch.float32),
    "fp16": _float_codec(torch.float16, 2, torch.float16),
    "bf16": _float_codec(torch.bfloat16, 2, torch.int16),
    "int8": _int_codec("int8", 127, 8),
    "int4": _int_codec("int4", 7, 4),
}
