"""Which clients take part in a round: a seeded draw that depends only on (seed, round),
or, in secure mode, a draw from the OS's CSPRNG that nobody can recompute."""

from __future__ import annotations

import random
from typing import Protocol

import torch

from fedloom.core.seeding import generator


class Sampler(Protocol):
    @property
    def expected_per_round(self) -> float:
        """Mean number of clients per round (the denominator of DP-FedAvg's average)."""
        ...

    def sample(self, rnd: int) -> list[int]:
        """Indices of the clients taking part in round ``rnd``: a function of (seed, rnd),
        or a fresh secure draw."""
        ...


class UniformSampler:
    """``per_round`` distinct clients out of ``num_clients``, uniformly without replacement."""

    def __init__(self, num_clients: int, per_round: int, seed: int, secure: bool = False) -> None:
        if not 1 <= per_round <= num_clients:
            raise ValueError(f"per_round must be in [1, {num_clients}], got {per_round}")
        self.num_clients = num_clients
        self.per_round = per_round
        self.seed = seed
        self.secure = secure

    @property
    def expected_per_round(self) -> float:
        return float(self.per_round)

    def sample(self, rnd: int) -> list[int]:
        if self.secure:  # SystemRandom reads os.urandom: no seed, no state to recover
            return sorted(random.SystemRandom().sample(range(self.num_clients), self.per_round))
        order = torch.randperm(self.num_clients, generator=generator(self.seed, "sample", rnd))
        return sorted(order[: self.per_round].tolist())
