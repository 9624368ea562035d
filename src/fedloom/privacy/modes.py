"""Builders for ``privacy.mode=central`` and ``privacy.mode=local``."""

from __future__ import annotations

from typing import Any

from fedloom.client.transforms import ATTACK, CLIP, LOCAL_DP
from fedloom.core.errors import ConfigError
from fedloom.parts import Parts
from fedloom.privacy.accountant import Accountant, calibrate
from fedloom.privacy.adaptive import AdaptiveClip
from fedloom.privacy.budget import budget_guard, largest, report
from fedloom.privacy.central import CentralDPStrategy, CentralMechanism, client_clip_hook
from fedloom.privacy.config import PrivacyConfig
from fedloom.privacy.discrete import require_opendp
from fedloom.privacy.local import ParticipationLedger, local_dp_hook
from fedloom.privacy.local_tiers import LocalTierSampler
from fedloom.privacy.noise import noise_source
from fedloom.privacy.plan import local_schedule, local_tier_rates, schedule_for, tier_rates
from fedloom.privacy.sampler import PoissonSampler
from fedloom.privacy.schedule import NoiseSchedule, describe
from fedloom.privacy.tiers import TierBook, TieredPoissonSampler, assign_tiers, tier_facts


def noise_multiplier_for(cfg: PrivacyConfig, sample_rate: float, steps: int) -> float:
    """The configured multiplier, or the one calibrated to ``target_epsilon``."""
    if cfg.noise_multiplier is not None:
        return cfg.noise_multiplier
    if cfg.target_epsilon is None:
        raise ConfigError(["privacy: set noise_multiplier or target_epsilon"])
    return calibrate(cfg.target_epsilon, cfg.delta, sample_rate, steps, cfg.accountant)


def report_tiers(
    parts: Parts, cfg: PrivacyConfig, book: TierBook, schedule: NoiseSchedule, facts: dict[str, Any]
) -> None:
    """Report a tiered run (ε the largest tier's; per round the multiplier, each tier's ε
    and sampling rate) and stop it before a round in which every tier is spent."""
    report(
        parts,
        cfg,
        lambda kind: largest(book.epsilons(kind), kind),
        facts,
        lambda rnd: {
            "noise_multiplier": schedule.at(rnd),
            "epsilon_by_tier": [eps for eps, _ in book.epsilons(cfg.accountant)],
            "sample_rate_by_tier": list(book.rates_in(rnd)),
        },
    )

    def guard(rnd: int) -> str | None:
        if any(book.active(rnd)):
            return None
        return f"privacy budget: every tier is spent before round {rnd}"

    parts.guards.append(guard)


def _tier_book(parts: Parts, schedule: NoiseSchedule, rates: tuple[float, ...]) -> TierBook:
    cfg, fed = parts.config.privacy, parts.config
    return TierBook(
        tier_of=assign_tiers(cfg.tiers, fed.clients.num, fed.seed),
        targets=tuple(t.epsilon for t in cfg.tiers),
        rates=rates,
        steps=(1,) * len(cfg.tiers),
        kind=cfg.accountant,
        delta=cfg.delta,
        max_epsilon=cfg.max_epsilon,
        multiplier_at=schedule.at,
    )


def build_central(parts: Parts) -> None:
    cfg, fed = parts.config.privacy, parts.config
    if cfg.secure_rng:
        require_opendp("privacy.secure_rng")
    rate = fed.clients.per_round / fed.clients.num
    schedule = schedule_for(cfg, rate, 1, fed.rounds)
    z = schedule.at(1)
    book = None
    if cfg.tiers:
        rates = tier_rates(cfg, schedule, rate, (1,) * len(cfg.tiers), fed.rounds)
        book = _tier_book(parts, schedule, rates)
        sampler: PoissonSampler | TieredPoissonSampler = TieredPoissonSampler(
            book.tier_of, book.rates_in, fed.seed, cfg.secure_rng, book.expected_clients
        )
        expected = sum(q * n for q, n in zip(rates, book.sizes, strict=True))
    else:
        sampler = PoissonSampler(fed.clients.num, rate, fed.seed, secure=cfg.secure_rng)
        expected = sampler.expected_per_round
    adaptive = None
    if cfg.adaptive_clip:
        count_std = cfg.count_noise_multiplier or expected / 20
        adaptive = AdaptiveClip(cfg.clip, cfg.target_quantile, cfg.clip_lr, count_std)
    mech = CentralMechanism(
        clip=cfg.clip,
        noise_multiplier=z,
        sample_rate=rate,
        expected_clients=expected,
        accountant=Accountant(cfg.accountant),
        noise=noise_source(cfg.secure_rng, fed.seed, "dp-central"),
        adaptive=adaptive,
        granularity=cfg.granularity,
        schedule=None if schedule.constant else schedule,
        tiers=book,
    )
    parts.sampler = sampler
    parts.strategy = CentralDPStrategy(parts.strategy, mech)
    parts.add_transform(CLIP, client_clip_hook(), after=(ATTACK,))
    parts.stateful["privacy"] = mech
    acc = mech.accountant
    facts: dict[str, Any] = {
        "noise_multiplier": z,
        "sample_rate": rate,
        "expected_clients": expected,
        "clip": cfg.clip,
        "adaptive_clip": cfg.adaptive_clip,
        "noise": "discrete_gaussian",
        "level": "user",
        **describe(cfg.accountant, list(schedule.multipliers), cfg),
    }
    if book is None:
        report(
            parts,
            cfg,
            lambda kind: acc.epsilon_by(kind, cfg.delta),
            facts,
            lambda rnd: {"noise_multiplier": schedule.at(rnd)},
        )
        budget_guard(parts, cfg, lambda rnd: acc.epsilon_after(schedule.at(rnd), rate, cfg.delta))
        return
    facts.update(tier_facts(cfg, book, rate))
    report_tiers(parts, cfg, book, schedule, facts)


def build_local(parts: Parts) -> None:
    cfg, fed = parts.config.privacy, parts.config
    if cfg.secure_rng:
        require_opendp("privacy.secure_rng")
    base_rate = fed.clients.per_round / fed.clients.num
    schedule = local_schedule(cfg, base_rate, fed.rounds)
    z = schedule.at(1)
    ledger = ParticipationLedger(schedule, cfg.accountant)
    # secure: every client draws from its own OS CSPRNG (None), nothing the server can redo
    noise = None if cfg.secure_rng else noise_source(False, fed.seed, "dp-local")
    hook = local_dp_hook(cfg.clip, z, noise, ledger, cfg.granularity)
    parts.add_transform(LOCAL_DP, hook, after=(ATTACK, CLIP))
    parts.stateful["privacy"] = ledger
    facts: dict[str, Any] = {
        "noise_multiplier": z,
        "clip": cfg.clip,
        "sensitivity": 2 * cfg.clip,
        "noise": "discrete_gaussian",
        "level": "user, local (max over clients)",
        **describe(cfg.accountant, list(schedule.multipliers), cfg),
    }
    if not cfg.tiers:
        report(
            parts,
            cfg,
            lambda kind: ledger.max_epsilon_by(kind, cfg.delta),
            facts,
            lambda rnd: {"noise_multiplier": schedule.at(rnd)},
        )
        budget_guard(parts, cfg, lambda rnd: ledger.max_epsilon(cfg.delta, extra=1, rnd=rnd))
        return
    rates = local_tier_rates(cfg, schedule, base_rate, fed.rounds)
    sampler = LocalTierSampler(
        assign_tiers(cfg.tiers, fed.clients.num, fed.seed),
        rates,
        tuple(t.epsilon for t in cfg.tiers),
        ledger,
        cfg,
        fed.seed,
    )
    parts.sampler = sampler
    facts.update(sampler.facts(base_rate))
    report(
        parts,
        cfg,
        lambda kind: largest(sampler.epsilons(kind), kind),
        facts,
        lambda rnd: {
            "noise_multiplier": schedule.at(rnd),
            "epsilon_by_tier": [eps for eps, _ in sampler.epsilons(cfg.accountant)],
            "sample_rate_by_tier": list(rates),
        },
    )
