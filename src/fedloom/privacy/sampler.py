"""Poisson client sampling: each client joins round r independently with probability q.

This is the sampling that Opacus' accountants analyse (the sampled Gaussian mechanism);
a fixed-size draw would need a different analysis. The draw is a function of
(seed, round), so a resumed run samples the same clients.
"""

from __future__ import annotations

import torch

from fedloom.core.seeding import generator


class PoissonSampler:
    def __init__(self, num_clients: int, rate: float, seed: int) -> None:
        if not 0 < rate <= 1:
            raise ValueError(f"sampling rate must be in (0, 1], got {rate}")
        self.num_clients = num_clients
        self.rate = rate
        self.seed = seed

    @property
    def expected_per_round(self) -> float:
        return self.rate * self.num_clients

    def sample(self, rnd: int) -> list[int]:
        """May be empty: the DP round then still releases (noise only) and is accounted."""
        draws = torch.rand(self.num_clients, generator=generator(self.seed, "poisson", rnd))
        return torch.nonzero(draws < self.rate).flatten().tolist()
