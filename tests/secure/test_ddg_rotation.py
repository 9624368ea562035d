"""The DDG rotation on vectors padded to a multiple of BLOCK (not a power of two): block
Hadamard layers, orthonormal, their own inverse, flattening a spike like one full
Hadamard would, and decoding the clipped mean."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedloom.core.seeding import numpy_rng
from fedloom.privacy.ddg import (
    BLOCK,
    DDGSum,
    block_hadamard,
    blocks,
    hadamard,
    noise_source,
    padded,
)


def _ddg(dim: int, z: float = 1e-6, n: int = 4, t: int = 3) -> DDGSum:
    return DDGSum(dim, 1.0, z, n, t, 20, 0, noise_source(0, secure=False))


def test_padding_is_a_power_of_two_up_to_the_block_then_a_multiple_of_it() -> None:
    assert BLOCK == 1024
    assert [padded(d) for d in (1, 5, 650, 1024, 1025, 3000)] == [1, 8, 1024, 1024, 2048, 3072]
    assert padded(53_002) == 53_248  # the digits cnn: 0.46% padding instead of 23.6%
    assert blocks(53_248) == [32_768, 16_384, 4_096] and blocks(1024) == [1024]


def test_block_hadamard_is_hadamard_per_block() -> None:
    x = numpy_rng(0, "x").normal(size=3072)
    y = block_hadamard(x)
    assert np.allclose(y[:2048], hadamard(x[:2048])) and np.allclose(y[2048:], hadamard(x[2048:]))
    assert np.allclose(block_hadamard(y), x)


@pytest.mark.parametrize("dim", [650, 3000, 53_002])
def test_rotation_is_orthonormal_and_undone(dim: int) -> None:
    codec = _ddg(dim)
    x = numpy_rng(1, "x").normal(size=dim)
    rotated = codec.rotate(x, 5)
    assert rotated.shape == (padded(dim),)
    assert np.linalg.norm(rotated) == pytest.approx(np.linalg.norm(x), rel=1e-12)
    assert np.allclose(codec.unrotate(rotated, 5), x)
    assert not np.allclose(codec.rotate(x, 6), rotated)  # a fresh rotation each round


def test_two_layers_flatten_a_spike_over_all_blocks() -> None:
    """All mass on one coordinate: one layer of blocks would leave all of it on that
    coordinate's 1024-block; the permuted second layer spreads it over all 3072, each
    block's share of the energy in proportion to its size, no coordinate far above the
    ideal 1/√3072."""
    codec = _ddg(3000)
    spike = np.zeros(3000)
    spike[2500] = 1.0  # in the last (1024) block
    rotated = codec.rotate(spike, 1)
    energy = [float(np.sum(rotated[:2048] ** 2)), float(np.sum(rotated[2048:] ** 2))]
    assert energy == pytest.approx([2 / 3, 1 / 3], abs=0.05)
    assert np.count_nonzero(np.abs(rotated) > 1e-12) > 2900
    assert np.abs(rotated).max() < 5 / math.sqrt(3072)


def test_a_multi_block_ddg_sum_decodes_the_clipped_mean() -> None:
    codec = _ddg(3000)
    rng = numpy_rng(2, "updates")
    updates = [rng.normal(size=3000) * s for s in (0.005, 0.01, 0.02, 1.0)]  # the last clips
    total = np.zeros(codec.length, dtype=np.uint64)
    for k, u in enumerate(updates):
        total += codec.encode(u, 1, 0.0, 3, str(k))
    total &= np.uint64((1 << codec.bits) - 1)
    decoded = codec.decode(total, 4, 3)
    clipped = [u * min(1.0, 1.0 / np.linalg.norm(u)) for u in updates]
    assert np.abs(decoded.mean - np.mean(clipped, axis=0)).max() < 3 * codec.gamma
