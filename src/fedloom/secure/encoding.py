"""Integer encoding for secure aggregation: clip, scale, round, weight, size the modulus.

A client's update ``x`` becomes ``w · q(x)`` where ``q`` clips each coordinate to
``[-clip, clip]``, scales it to ``[-L, L]`` with ``L = 2**(quant_bits-1) - 1`` and rounds
stochastically (unbiased), and ``w`` is an integer weight in ``[0, max_weight]`` (for
instance the example count, capped). The weight itself is appended as one more
coordinate, so the server learns only ``Σ w·q(x)`` and ``Σ w``, never a count.
Everything is reduced mod ``2**bits``; :func:`modulus_bits` picks ``bits`` so that the
sum of ``n`` such vectors can never wrap.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fedloom.core.errors import ConfigError, FedloomError, UpdateRejected
from fedloom.secure.config import MAX_BITS


class EncodingConfig(BaseModel):
    """How a float update is turned into integers for the secure sum."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    clip: float = Field(1.0, gt=0, description="each coordinate is clipped to [-clip, clip]")
    quant_bits: int = Field(8, ge=2, le=32, description="signed levels: 2**(bits-1) - 1")
    max_weight: int = Field(1, ge=1, description="bound on a client's integer weight")


def levels(quant_bits: int) -> int:
    """``L``: the largest quantized magnitude."""
    return 2 ** (quant_bits - 1) - 1


def modulus_bits(quant_bits: int, n_clients: int, max_weight: int) -> int:
    """The fewest bits whose modulus holds every possible sum without wrapping.

    A sum lies in ``[-M, M]`` with ``M = n · max_weight · L``; those ``2M + 1`` values
    are distinct mod ``2**bits`` exactly when ``2**bits ≥ 2M + 1``. That is
    ``quant_bits + log2(n · max_weight)`` bits, give or take one: the headroom. The
    weight sum ``n · max_weight ≤ M`` fits as well.
    """
    if quant_bits < 2 or n_clients < 1 or max_weight < 1:
        raise ConfigError(
            ["secure encoding needs quant_bits >= 2, n_clients >= 1, max_weight >= 1"]
        )
    bound = n_clients * max_weight * levels(quant_bits)
    bits = (2 * bound).bit_length()
    if bits > MAX_BITS:
        raise ConfigError(
            [f"secure.bits: the sum needs {bits} bits, more than {MAX_BITS}; lower quant_bits"]
        )
    return bits


def resolve_bits(quant_bits: int, n_clients: int, max_weight: int, bits: int | None = None) -> int:
    """``bits`` if given and safe, else the automatic size; an unsafe one is a config error."""
    needed = modulus_bits(quant_bits, n_clients, max_weight)
    if bits is None:
        return needed
    if not needed <= bits <= MAX_BITS:
        raise ConfigError(
            [
                f"secure.bits={bits} can overflow: {n_clients} clients at quant_bits={quant_bits}"
                f" and max_weight={max_weight} need {needed}..{MAX_BITS}"
            ]
        )
    return bits


def stochastic_round(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Round each value down or up at random so that ``E[round(v)] = v`` exactly."""
    floor = np.floor(values)
    up = rng.random(values.shape) < (values - floor)
    return (floor + up).astype(np.int64)


def quantize(
    update: np.ndarray, clip: float, quant_bits: int, rng: np.random.Generator
) -> np.ndarray:
    """Integers in ``[-L, L]`` whose expectation is ``clip(update) · L / clip``."""
    values = np.asarray(update, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise FedloomError("cannot quantize an update with NaN or infinite values")
    scaled = np.clip(values, -clip, clip) * (levels(quant_bits) / clip)
    return stochastic_round(scaled, rng)


def encode_input(
    update: np.ndarray,
    weight: int,
    config: EncodingConfig,
    bits: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """The vector a client masks: ``w · q(update)`` followed by ``w``, mod ``2**bits``."""
    if not 0 <= weight <= config.max_weight:
        raise FedloomError(f"weight {weight} is outside [0, max_weight={config.max_weight}]")
    ints = quantize(np.ravel(update), config.clip, config.quant_bits, rng) * weight
    return to_modular(np.append(ints, np.int64(weight)), bits)


def decode_aggregate(
    total: np.ndarray, config: EncodingConfig, bits: int
) -> tuple[np.ndarray, int]:
    """The weighted mean (float64) and the weight sum from a secure sum of encoded inputs."""
    signed = from_modular(total, bits)
    weight_sum = int(signed[-1])
    if weight_sum <= 0:
        raise FedloomError("the secure sum has no weight: no client contributed")
    scale = levels(config.quant_bits) / config.clip
    return signed[:-1].astype(np.float64) / (scale * weight_sum), weight_sum


def to_modular(ints: np.ndarray, bits: int) -> np.ndarray:
    """Signed integers as residues mod ``2**bits`` (two's complement), uint64."""
    wrapped = np.asarray(ints, dtype=np.int64).astype(np.uint64)
    return wrapped if bits == MAX_BITS else wrapped & np.uint64((1 << bits) - 1)


def from_modular(residues: np.ndarray, bits: int) -> np.ndarray:
    """Residues mod ``2**bits`` back to the signed integers in ``[-2**(bits-1), 2**(bits-1))``."""
    values = np.asarray(residues, dtype=np.uint64)
    if bits == MAX_BITS:
        return values.view(np.int64)
    signed = values.astype(np.int64)
    return np.where(signed >= 1 << (bits - 1), signed - (1 << bits), signed)


def packed_size(length: int, bits: int) -> int:
    """Bytes of a packed vector: ``ceil(length · bits / 8)``."""
    return (length * bits + 7) // 8


def pack(vector: np.ndarray, bits: int) -> bytes:
    """The low ``bits`` of each coordinate, bit-packed little-endian, last byte zero-padded."""
    raw = np.ascontiguousarray(vector, dtype="<u8").view(np.uint8).reshape(-1, 8)
    if bits % 8 == 0:  # whole bytes: no bit shuffling needed
        return raw[:, : bits // 8].tobytes()
    low = np.unpackbits(raw, axis=1, bitorder="little")[:, :bits]
    return np.packbits(low.ravel(), bitorder="little").tobytes()


def unpack(data: bytes, length: int, bits: int) -> np.ndarray:
    """The vector in ``data``; a wrong size or a set padding bit is rejected.

    Bit-packing makes a coordinate ``≥ 2**bits`` unrepresentable; the only spare bits
    are the padding of the last byte, and they must be zero, so every vector has
    exactly one encoding.
    """
    expected = packed_size(length, bits)
    if len(data) != expected:
        raise UpdateRejected(
            f"masked vector has {len(data)} bytes, expected {expected} for {length} x {bits} bits"
        )
    if bits % 8 == 0:
        words = np.zeros((length, 8), dtype=np.uint8)
        words[:, : bits // 8] = np.frombuffer(data, dtype=np.uint8).reshape(length, bits // 8)
        return words.view("<u8").reshape(length).astype(np.uint64)
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    if flat[length * bits :].any():
        raise UpdateRejected(f"masked vector has a value outside [0, 2**{bits}) (padding bits set)")
    words = np.zeros((length, 64), dtype=np.uint8)
    words[:, :bits] = flat[: length * bits].reshape(length, bits)
    packed = np.packbits(words, axis=1, bitorder="little")
    return packed.view("<u8").reshape(length).astype(np.uint64)
