from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fedloom.core.errors import ConfigError, FedloomError, UpdateRejected
from fedloom.secure import encoding
from fedloom.secure.encoding import EncodingConfig


def test_modulus_bits_by_hand() -> None:
    # q=8: L=127; one client: sums in [-127, 127], 255 values -> 8 bits
    assert encoding.modulus_bits(8, 1, 1) == 8
    # 64 clients: M = 64 * 127 = 8128, 2M + 1 = 16257 <= 2**14
    assert encoding.modulus_bits(8, 64, 1) == 14
    # weight up to 100 with 256 clients: M = 256 * 100 * 127 = 3,251,200 -> 23 bits
    assert encoding.modulus_bits(8, 256, 100) == 23
    with pytest.raises(ConfigError, match="more than 64"):
        encoding.modulus_bits(32, 2**20, 2**20)


def test_an_explicit_bits_must_not_overflow() -> None:
    assert encoding.resolve_bits(8, 64, 1) == 14
    assert encoding.resolve_bits(8, 64, 1, bits=32) == 32
    with pytest.raises(ConfigError, match=r"secure.bits=13 can overflow.*need 14..64"):
        encoding.resolve_bits(8, 64, 1, bits=13)
    with pytest.raises(ConfigError, match="need 14..64"):
        encoding.resolve_bits(8, 64, 1, bits=65)


def _decoded_extreme(sign: int, quant_bits: int, n: int, weight: int, bits: int) -> int:
    """The decoded sum of n clients that all send sign * L at full weight."""
    one = int(encoding.to_modular(np.array([sign * encoding.levels(quant_bits) * weight]), bits)[0])
    total = np.array([one * n % 2**bits], dtype=np.uint64)
    return int(encoding.from_modular(total, bits)[0])


@settings(max_examples=300, deadline=None)
@given(
    quant_bits=st.integers(2, 32),
    n=st.integers(1, 10**6),
    max_weight=st.integers(1, 10**4),
)
def test_modulus_sizing_never_overflows_at_the_extremes(
    quant_bits: int, n: int, max_weight: int
) -> None:
    bound = n * max_weight * encoding.levels(quant_bits)
    assume((2 * bound).bit_length() <= 64)
    bits = encoding.modulus_bits(quant_bits, n, max_weight)
    for sign in (1, -1):
        assert _decoded_extreme(sign, quant_bits, n, max_weight, bits) == sign * bound
    weight_sum = int(
        encoding.from_modular(np.array([n * max_weight % 2**bits], np.uint64), bits)[0]
    )
    assert weight_sum == n * max_weight
    # and it is the fewest bits: one less wraps the positive extreme
    assert _decoded_extreme(1, quant_bits, n, max_weight, bits - 1) != bound
    with pytest.raises(ConfigError):
        encoding.resolve_bits(quant_bits, n, max_weight, bits=bits - 1)


def test_stochastic_rounding_is_unbiased() -> None:
    rng = np.random.default_rng(1)
    values = np.array([0.3, -1.7, 2.5, 0.0, 126.99, -0.001])
    draws = 200_000
    rounded = encoding.stochastic_round(np.tile(values, (draws, 1)), rng)
    assert np.all((rounded == np.floor(values)) | (rounded == np.floor(values) + 1))
    # each draw has standard deviation <= 1/2, so 6 sigma of the mean is 6 * 0.5 / sqrt(draws)
    # (false failure rate < 2e-9 per value)
    tolerance = 6 * 0.5 / np.sqrt(draws)
    assert np.all(np.abs(rounded.mean(axis=0) - values) < tolerance)
    assert encoding.stochastic_round(np.array([3.0, -2.0]), rng).tolist() == [3, -2]


def test_quantize_clips_and_scales_into_the_levels() -> None:
    rng = np.random.default_rng(0)
    q = encoding.quantize(np.array([5.0, -5.0, 0.5, 0.0]), clip=1.0, quant_bits=8, rng=rng)
    assert q[0] == 127 and q[1] == -127 and q[3] == 0
    assert q[2] in (63, 64)  # 0.5 * 127 = 63.5
    with pytest.raises(FedloomError, match="NaN"):
        encoding.quantize(np.array([np.nan]), 1.0, 8, rng)


def test_weighted_encoding_round_trips_to_the_weighted_mean() -> None:
    rng = np.random.default_rng(2)
    config = EncodingConfig(clip=2.0, quant_bits=12, max_weight=50)
    n = 5
    bits = encoding.modulus_bits(config.quant_bits, n, config.max_weight)
    updates = [rng.uniform(-2, 2, 100) for _ in range(n)]
    weights = [1, 50, 7, 0, 23]
    total = np.zeros(101, dtype=np.uint64)
    for update, weight in zip(updates, weights, strict=True):
        total = (total + encoding.encode_input(update, weight, config, bits, rng)) & np.uint64(
            2**bits - 1
        )
    mean, weight_sum = encoding.decode_aggregate(total, config, bits)
    assert weight_sum == 81
    expected = sum(w * u for u, w in zip(updates, weights, strict=True)) / 81
    # each coordinate is off by less than one level per client: weight-averaged, < 1 / scale
    scale = encoding.levels(12) / 2.0
    assert np.max(np.abs(mean - expected)) < 1 / scale
    with pytest.raises(FedloomError, match="outside"):
        encoding.encode_input(updates[0], 51, config, bits, rng)


def test_encoding_config_is_strict() -> None:
    with pytest.raises(ValueError, match="extra"):
        EncodingConfig(clip=1.0, bits=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="greater than or equal to 2"):
        EncodingConfig(quant_bits=1)


def test_pack_unpack_and_their_checks() -> None:
    vector = np.array([0, 1, 2**13 - 1, 4242], dtype=np.uint64)
    data = encoding.pack(vector, 13)
    assert len(data) == 7  # 52 bits
    assert data[0] == 0 and data[1] == 0b0010_0000  # 1 sits at bit 13
    assert encoding.unpack(data, 4, 13).tolist() == vector.tolist()
    with pytest.raises(UpdateRejected, match="has 7 bytes, expected 9 for 5 x 13 bits"):
        encoding.unpack(data, 5, 13)
    padded = data[:-1] + bytes([data[-1] | 0x80])  # bit 55: past the 52 used
    with pytest.raises(UpdateRejected, match=r"outside \[0, 2\*\*13\) \(padding bits set\)"):
        encoding.unpack(padded, 4, 13)
    full = np.array([2**64 - 1, 0, 12345678901234567890], dtype=np.uint64)
    assert encoding.unpack(encoding.pack(full, 64), 3, 64).tolist() == full.tolist()
    rng = np.random.default_rng(0)
    for bits in (1, 7, 8, 14, 31, 33, 63):
        v = rng.integers(0, 2**bits, 101, dtype=np.uint64)
        data = encoding.pack(v, bits)
        assert len(data) == encoding.packed_size(101, bits) == (101 * bits + 7) // 8
        assert encoding.unpack(data, 101, bits).tolist() == v.tolist()
