"""Poisson client sampling: each client joins round r independently with probability q.

This is the sampling that Opacus' accountants analyse (the sampled Gaussian mechanism);
a fixed-size draw would need a different analysis. Seeded, the draw is a function of
(seed, round), so a resumed run samples the same clients; secure, it comes from the OS's
CSPRNG, so nobody who knows the seed can tell who was sampled.
"""

from __future__ import annotations

import torch

from fedloom.core.seeding import generator
from fedloom.privacy.noise import poisson_mask


class PoissonSampler:
    def __init__(self, num_clients: int, rate: float, seed: int, secure: bool = False) -> None:
        if not 0 < rate <= 1:
            raise ValueError(f"sampling rate must be in (0, 1], got {rate}")
        self.num_clients = num_clients
        self.rate = rate
        self.seed = seed
        self.secure = secure

    @property
    def expected_per_round(self) -> float:
        return self.rate * self.num_clients

    def sample(self, rnd: int) -> list[int]:
        """May be empty: the DP round then still releases (noise only) and is accounted."""
        gen = None if self.secure else generator(self.seed, "poisson", rnd)
        return torch.nonzero(poisson_mask(self.num_clients, self.rate, gen)).flatten().tolist()
