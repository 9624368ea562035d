"""Individual privacy budgets in tiers (individualized sampling, Boenisch et al., "Have it
your way", NeurIPS 2023).

Every client belongs to one tier; all tiers share the noise multiplier of each round and
each tier gets its own sampling rate, calibrated so that its ε after ``rounds`` lands in
[0.98, 1] of its budget (a rate is capped at 1; such a tier ends below its budget, which
summary.json reports). A member of tier t is in a round with probability q_t: for that
member the round is a sampled Gaussian mechanism with (σ_r, q_t), so each tier has its
own accountant. Before each round a tier whose next step would bring its ε above its
budget (or above ``privacy.max_epsilon``) is left out of the round: it is no longer
sampled, and the other tiers go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from fedloom.core.errors import ConfigError
from fedloom.core.seeding import generator
from fedloom.privacy.accountant import Accountant
from fedloom.privacy.config import AccountantName, PrivacyConfig, TierConfig
from fedloom.privacy.noise import secure_uniform

log = logging.getLogger(__name__)

Epsilons = list[tuple[float, AccountantName]]


def assign_tiers(tiers: Sequence[TierConfig], num_clients: int, seed: int) -> tuple[int, ...]:
    """The tier of each client: fractions by a seeded permutation (largest-remainder counts
    in tier order), or the listed clients (every client must be in a tier)."""
    if tiers[0].fraction is not None:
        raw = [(t.fraction or 0.0) * num_clients for t in tiers]
        counts = [int(x) for x in raw]
        by_remainder = sorted(range(len(tiers)), key=lambda i: counts[i] - raw[i])
        for i in by_remainder[: num_clients - sum(counts)]:
            counts[i] += 1
        order = torch.randperm(num_clients, generator=generator(seed, "privacy-tiers")).tolist()
        tier_of = [0] * num_clients
        start = 0
        for t, count in enumerate(counts):
            for k in order[start : start + count]:
                tier_of[k] = t
            start += count
        return tuple(tier_of)
    tier_of = [-1] * num_clients
    for t, tier in enumerate(tiers):
        for k in tier.clients or ():
            if k >= num_clients:
                raise ConfigError([f"privacy.tiers: client {k} does not exist ({num_clients})"])
            tier_of[k] = t
    missing = [k for k, t in enumerate(tier_of) if t < 0]
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
        raise ConfigError([f"privacy.tiers: clients {shown} are in no tier"])
    return tuple(tier_of)


def strictest(cfg: PrivacyConfig) -> int:
    return min(range(len(cfg.tiers)), key=lambda t: cfg.tiers[t].epsilon)


@dataclass
class TierBook:
    """Each tier's budget, rate and accountant, and which tiers take part in a round.

    ``steps``: accounted steps per round of a tier (1 for central DP; for DP-SGD the most
    local steps any member runs, as if every member trained every round)."""

    tier_of: tuple[int, ...]
    targets: tuple[float, ...]
    rates: tuple[float, ...]
    steps: tuple[int, ...]
    kind: AccountantName
    delta: float
    max_epsilon: float | None = None
    multiplier_at: Callable[[int], float] = lambda rnd: 1.0
    accountants: list[Accountant] = field(init=False)
    _prepared: tuple[int, tuple[bool, ...]] = field(init=False, default=(0, ()))

    def __post_init__(self) -> None:
        self.accountants = [Accountant(self.kind) for _ in self.targets]

    @property
    def sizes(self) -> list[int]:
        return [self.tier_of.count(t) for t in range(len(self.targets))]

    def budget(self, t: int) -> float:
        return min(self.targets[t], self.max_epsilon or float("inf"))

    def active(self, rnd: int) -> tuple[bool, ...]:
        """Which tiers are sampled in round ``rnd``: those whose ε after this round's step
        stays within budget (decided once per round, before anything is sampled)."""
        if self._prepared[0] != rnd:
            z = self.multiplier_at(rnd)
            flags = tuple(
                acc.epsilon_after(z, q, self.delta, s) <= self.budget(t)
                for t, (acc, q, s) in enumerate(
                    zip(self.accountants, self.rates, self.steps, strict=True)
                )
            )
            self._prepared = (rnd, flags)
        return self._prepared[1]

    def rates_in(self, rnd: int) -> tuple[float, ...]:
        """Each tier's sampling rate in round ``rnd`` (0 for a spent tier)."""
        return tuple(q if on else 0.0 for q, on in zip(self.rates, self.active(rnd), strict=True))

    def expected_clients(self, rnd: int) -> float:
        return sum(q * n for q, n in zip(self.rates_in(rnd), self.sizes, strict=True))

    def record(self, rnd: int) -> None:
        """Account round ``rnd``'s release for every tier that took part."""
        z = self.multiplier_at(rnd)
        for t, on in enumerate(self.active(rnd)):
            if on:
                self.accountants[t].step(z, self.rates[t], self.steps[t])

    def epsilons(self, kind: AccountantName) -> Epsilons:
        return [acc.epsilon_by(kind, self.delta) for acc in self.accountants]

    def state_dict(self) -> dict[str, Any]:
        return {"tiers": [acc.state_dict() for acc in self.accountants]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["tiers"]
        if len(saved) != len(self.accountants):
            raise ConfigError(
                [
                    f"privacy.tiers: the checkpoint has {len(saved)} tiers, "
                    f"the config {len(self.targets)}"
                ]
            )
        for acc, one in zip(self.accountants, saved, strict=True):
            acc.load_state_dict(one)
        self._prepared = (0, ())


class TieredPoissonSampler:
    """Each client joins round r independently with its tier's rate in that round: one
    uniform per client from (seed, "poisson", r), or from the OS's CSPRNG when secure."""

    def __init__(
        self,
        tier_of: Sequence[int],
        rates_in: Callable[[int], Sequence[float]],
        seed: int,
        secure: bool = False,
        expected: Callable[[int], float] | None = None,
    ) -> None:
        self.tier_of = torch.tensor(list(tier_of), dtype=torch.long)
        self.rates_in, self.seed, self.secure = rates_in, seed, secure
        self._expected = expected
        self._round = 1

    @property
    def expected_per_round(self) -> float:
        if self._expected is None:
            rates = torch.tensor(list(self.rates_in(self._round)), dtype=torch.float64)
            return float(rates[self.tier_of].sum())
        return self._expected(self._round)

    def sample(self, rnd: int) -> list[int]:
        self._round = rnd
        n = len(self.tier_of)
        rates = torch.tensor(list(self.rates_in(rnd)), dtype=torch.float64)[self.tier_of]
        gen = None if self.secure else generator(self.seed, "poisson", rnd)
        draws = secure_uniform(n) if gen is None else torch.rand(n, generator=gen)
        return torch.nonzero(draws.double() < rates).flatten().tolist()


def tier_facts(cfg: PrivacyConfig, book: TierBook, base_rate: float) -> dict[str, Any]:
    """summary.json's view of the tiers (aggregates only, never a client id); a tier whose
    rate is capped at 1 is logged: it ends below its budget."""
    for t, q in enumerate(book.rates):
        if q >= 1.0:
            log.warning(
                "privacy.tiers[%d] (epsilon=%g): even sampling at rate 1 spends less than its "
                "budget; the tier ends below it",
                t,
                cfg.tiers[t].epsilon,
            )
    return {
        "tiers": [
            {
                "epsilon": cfg.tiers[t].epsilon,
                "clients": size,
                "sample_rate": book.rates[t],
                "steps_per_round": book.steps[t],
                "capped": book.rates[t] >= 1.0,
            }
            for t, size in enumerate(book.sizes)
        ],
        "base_sample_rate": base_rate,
    }
