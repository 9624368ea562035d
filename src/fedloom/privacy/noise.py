"""Noise for privacy mechanisms, from a seeded or a secure source.

Two kinds of draw. ``discrete_gaussian``: integers from N_Z(0, s²), what central and
local DP add on their fixed-point grid (``fedloom.privacy.grid``); no floating-point value
enters the released noise. ``normal``: float normals, which DP-SGD hands to Opacus.

Seeded (default): generators derived from (seed, purpose, round, ...), so a run and its
resume draw the same noise. Secure (``privacy.secure_rng``): the discrete Gaussian comes
from OpenDP's exact sampler over the OS's randomness; normals from uniform bits of the
operating system's CSPRNG (``os.urandom``) by Box–Muller in float64, with the radius'
uniform reaching down to 2^-1074 so the normal is not cut off at the 8.6σ a 53-bit
uniform would impose. Mersenne Twister output is predictable from its past outputs,
which an attacker who sees noised releases could exploit.

``secure_uniform`` and ``poisson_mask`` serve the other privacy-relevant draws in secure
mode (which clients and which examples take part): ε assumes the adversary does not know
them, which a seeded draw cannot promise to anyone who knows the seed.
"""

from __future__ import annotations

import math
import os
from typing import Protocol

import numpy as np
import torch

from fedloom.core.seeding import generator, numpy_rng
from fedloom.privacy.discrete import secure_discrete_gaussian, seeded_discrete_gaussian


class NoiseSource(Protocol):
    def normal(
        self, shape: torch.Size, std: float, dtype: torch.dtype, *keys: object
    ) -> torch.Tensor:
        """``N(0, std²)`` samples of ``shape``; ``keys`` say which draw it is (round, name)."""
        ...

    def discrete_gaussian(self, shape: torch.Size, scale: float, *keys: object) -> torch.Tensor:
        """int64 samples of N_Z(0, scale²) (the discrete Gaussian) of ``shape``."""
        ...


class SeededNoise:
    def __init__(self, seed: int, purpose: str) -> None:
        self.seed, self.purpose = seed, purpose

    def normal(
        self, shape: torch.Size, std: float, dtype: torch.dtype, *keys: object
    ) -> torch.Tensor:
        gen = generator(self.seed, self.purpose, *keys)
        out = torch.empty(shape, dtype=torch.float64).normal_(0.0, 1.0, generator=gen)
        return (out * std).to(dtype)

    def discrete_gaussian(self, shape: torch.Size, scale: float, *keys: object) -> torch.Tensor:
        rng = numpy_rng(self.seed, self.purpose, "discrete-gaussian", *keys)
        draws = seeded_discrete_gaussian(rng, math.prod(shape), scale)
        return torch.from_numpy(draws).reshape(shape)


def _uniform53(n: int) -> np.ndarray:
    """``n`` uniforms on [0, 1) with 53 random bits each, from ``os.urandom``."""
    bits = np.frombuffer(os.urandom(8 * n), dtype=np.uint64)
    return (bits >> np.uint64(11)).astype(np.float64) / 2.0**53


def secure_uniform(n: int) -> torch.Tensor:
    """``n`` float64 uniforms on [0, 1) from the OS's CSPRNG."""
    return torch.from_numpy(_uniform53(n).copy())


def poisson_mask(n: int, rate: float, gen: torch.Generator | None) -> torch.Tensor:
    """Each of ``n`` items in independently with probability ``rate``: from ``gen``, or
    from the OS's CSPRNG when ``gen`` is None."""
    draws = secure_uniform(n) if gen is None else torch.rand(n, generator=gen)
    return draws < rate


def _uniform_full_range(n: int) -> np.ndarray:
    """``n`` uniforms on (0, 1) from ``os.urandom`` that reach every float64 binade: the
    binade [2^-(e+1), 2^-e) is chosen with probability 2^-(e+1) (e = leading zero bits of
    a random stream), then 52 random mantissa bits. Down to 2^-1074, not 2^-53."""
    mantissa = np.frombuffer(os.urandom(8 * n), dtype=np.uint64) >> np.uint64(12)
    zeros = np.zeros(n, dtype=np.int64)
    pending = np.arange(n)
    while pending.size:
        top = np.frombuffer(os.urandom(8 * pending.size), dtype=np.uint64) >> np.uint64(11)
        found = top != 0
        # top < 2^53 is exact in float64; frexp's exponent is bit length
        bits = np.frexp(top[found].astype(np.float64))[1]
        zeros[pending[found]] += 53 - bits
        zeros[pending[~found]] += 53  # 53 zero bits: read on
        pending = pending[~found]
        pending = pending[zeros[pending] < 1074]
    fraction = 1.0 + mantissa.astype(np.float64) / 2.0**52
    return np.ldexp(fraction, -(np.minimum(zeros, 1073) + 1).astype(np.int32))


class SecureNoise:
    def discrete_gaussian(self, shape: torch.Size, scale: float, *keys: object) -> torch.Tensor:
        draws = secure_discrete_gaussian(math.prod(shape), scale)
        return torch.from_numpy(draws).reshape(shape)

    def normal(
        self, shape: torch.Size, std: float, dtype: torch.dtype, *keys: object
    ) -> torch.Tensor:
        n = math.prod(shape)
        pairs = (n + 1) // 2
        u1, u2 = _uniform_full_range(pairs), _uniform53(pairs)
        radius = np.sqrt(-2.0 * np.log(u1))
        normals = np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)])
        return (torch.from_numpy(normals[:n].copy()).reshape(shape) * std).to(dtype)


def noise_source(secure: bool, seed: int, purpose: str) -> NoiseSource:
    return SecureNoise() if secure else SeededNoise(seed, purpose)
