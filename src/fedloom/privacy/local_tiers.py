"""Tiers in local DP: how often each client releases.

Local DP has no amplification by sampling (the server sees every release), so a tier's
budget buys releases: a client of tier t is drawn in a round with probability p_t (its
tier's participation rate, calibrated so that the releases it may make fit its budget)
and is left out of any round whose release would bring its own ε above the budget (or
``privacy.max_epsilon``). Each client is accounted on its own releases; a tier's ε is
the largest of its members'.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fedloom.privacy.config import AccountantName, PrivacyConfig
from fedloom.privacy.local import ParticipationLedger
from fedloom.privacy.tiers import Epsilons, TieredPoissonSampler

log = logging.getLogger(__name__)


class LocalTierSampler:
    def __init__(
        self,
        tier_of: Sequence[int],
        rates: tuple[float, ...],
        targets: tuple[float, ...],
        ledger: ParticipationLedger,
        cfg: PrivacyConfig,
        seed: int,
    ) -> None:
        self.tier_of, self.rates, self.targets = tuple(tier_of), rates, targets
        self.ledger, self.delta = ledger, cfg.delta
        limit = cfg.max_epsilon or float("inf")
        self.budgets = tuple(min(t, limit) for t in targets)
        self.inner = TieredPoissonSampler(tier_of, lambda rnd: rates, seed, cfg.secure_rng)

    @property
    def expected_per_round(self) -> float:
        return self.inner.expected_per_round

    def sample(self, rnd: int) -> list[int]:
        """The Poisson draw by tier, less each client whose release would exceed its budget."""
        z = self.ledger.multiplier_at(rnd)
        return [
            k
            for k in self.inner.sample(rnd)
            if self.ledger.client_epsilon(str(k), self.delta, extra=z)
            <= self.budgets[self.tier_of[k]]
        ]

    def epsilons(self, kind: AccountantName) -> Epsilons:
        """Each tier's ε: the largest over its members' distinct histories."""
        histories: list[set[tuple[tuple[float, float, int], ...]]] = [set() for _ in self.targets]
        for cid in self.ledger.releases:
            histories[self.tier_of[int(cid)]].add(tuple(self.ledger.history(cid)))
        out: Epsilons = []
        for tier in histories:
            answers = [self.ledger._epsilon(kind, list(h), self.delta) for h in tier]
            out.append(max(answers, default=(0.0, kind), key=lambda answer: answer[0]))
        return out

    def facts(self, base_rate: float) -> dict[str, Any]:
        """summary.json's view of the tiers (aggregates only); a capped tier is logged."""
        sizes = [self.tier_of.count(t) for t in range(len(self.targets))]
        for t, q in enumerate(self.rates):
            if q >= 1.0:
                log.warning(
                    "privacy.tiers[%d] (epsilon=%g): a release in every round spends less "
                    "than its budget; the tier ends below it",
                    t,
                    self.targets[t],
                )
        return {
            "tiers": [
                {"epsilon": e, "clients": n, "participation_rate": q, "capped": q >= 1.0}
                for e, n, q in zip(self.targets, sizes, self.rates, strict=True)
            ],
            "base_sample_rate": base_rate,
        }
