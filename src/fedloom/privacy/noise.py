"""Gaussian noise for privacy mechanisms, from a seeded or a secure source.

Seeded (default): a torch generator derived from (seed, purpose, round, ...), so a run
and its resume draw the same noise. Secure (``privacy.secure_rng``): uniform bits from
the operating system's CSPRNG (``os.urandom``) turned into normals by Box–Muller in
float64; Mersenne Twister output is predictable from its past outputs, which an attacker
who sees noised releases could exploit.

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

from fedloom.core.seeding import generator


class NoiseSource(Protocol):
    def normal(
        self, shape: torch.Size, std: float, dtype: torch.dtype, *keys: object
    ) -> torch.Tensor:
        """``N(0, std²)`` samples of ``shape``; ``keys`` say which draw it is (round, name)."""
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


class SecureNoise:
    def normal(
        self, shape: torch.Size, std: float, dtype: torch.dtype, *keys: object
    ) -> torch.Tensor:
        n = math.prod(shape)
        pairs = (n + 1) // 2
        # u1 in (0, 1] so log(u1) is finite
        u1, u2 = 1.0 - _uniform53(pairs), _uniform53(pairs)
        radius = np.sqrt(-2.0 * np.log(u1))
        normals = np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)])
        return (torch.from_numpy(normals[:n].copy()).reshape(shape) * std).to(dtype)


def noise_source(secure: bool, seed: int, purpose: str) -> NoiseSource:
    return SecureNoise() if secure else SeededNoise(seed, purpose)
