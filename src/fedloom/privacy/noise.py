"""Gaussian noise for privacy mechanisms, from a seeded or a secure source.

Seeded (default): a torch generator derived from (seed, purpose, round, ...), so a run
and its resume draw the same noise. Secure (``privacy.secure_rng``): uniform bits from
the operating system's CSPRNG (``os.urandom``) turned into normals by Box–Muller in
float64; Mersenne Twister output is predictable from its past outputs, which an attacker
who sees noised releases could exploit.
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


class SecureNoise:
    def normal(
        self, shape: torch.Size, std: float, dtype: torch.dtype, *keys: object
    ) -> torch.Tensor:
        n = math.prod(shape)
        pairs = (n + 1) // 2
        bits = np.frombuffer(os.urandom(16 * pairs), dtype=np.uint64).reshape(2, pairs)
        # 53 random bits per uniform; u1 in (0, 1] so log(u1) is finite
        u1 = ((bits[0] >> np.uint64(11)).astype(np.float64) + 1.0) / 2.0**53
        u2 = (bits[1] >> np.uint64(11)).astype(np.float64) / 2.0**53
        radius = np.sqrt(-2.0 * np.log(u1))
        normals = np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)])
        return (torch.from_numpy(normals[:n].copy()).reshape(shape) * std).to(dtype)


def noise_source(secure: bool, seed: int, purpose: str) -> NoiseSource:
    return SecureNoise() if secure else SeededNoise(seed, purpose)
