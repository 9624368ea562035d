"""Builders for ``privacy.mode=central`` and ``privacy.mode=local``."""

from __future__ import annotations

from fedloom.client.transforms import ATTACK, CLIP, LOCAL_DP
from fedloom.core.errors import ConfigError
from fedloom.parts import Parts
from fedloom.privacy.accountant import Accountant, calibrate
from fedloom.privacy.adaptive import AdaptiveClip
from fedloom.privacy.budget import budget_guard, report
from fedloom.privacy.central import CentralDPStrategy, CentralMechanism, client_clip_hook
from fedloom.privacy.config import PrivacyConfig
from fedloom.privacy.discrete import require_opendp
from fedloom.privacy.local import ParticipationLedger, local_dp_hook
from fedloom.privacy.noise import noise_source
from fedloom.privacy.sampler import PoissonSampler


def noise_multiplier_for(cfg: PrivacyConfig, sample_rate: float, steps: int) -> float:
    """The configured multiplier, or the one calibrated to ``target_epsilon``."""
    if cfg.noise_multiplier is not None:
        return cfg.noise_multiplier
    if cfg.target_epsilon is None:
        raise ConfigError(["privacy: set noise_multiplier or target_epsilon"])
    return calibrate(cfg.target_epsilon, cfg.delta, sample_rate, steps, cfg.accountant)


def build_central(parts: Parts) -> None:
    cfg, fed = parts.config.privacy, parts.config
    if cfg.secure_rng:
        require_opendp("privacy.secure_rng")
    rate = fed.clients.per_round / fed.clients.num
    sampler = PoissonSampler(fed.clients.num, rate, fed.seed, secure=cfg.secure_rng)
    expected = sampler.expected_per_round
    z = noise_multiplier_for(cfg, rate, fed.rounds)
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
    )
    parts.sampler = sampler
    parts.strategy = CentralDPStrategy(parts.strategy, mech)
    parts.add_transform(CLIP, client_clip_hook(), after=(ATTACK,))
    parts.stateful["privacy"] = mech
    acc = mech.accountant
    report(
        parts,
        cfg,
        lambda kind: acc.epsilon_by(kind, cfg.delta),
        {
            "noise_multiplier": z,
            "sample_rate": rate,
            "expected_clients": expected,
            "clip": cfg.clip,
            "adaptive_clip": cfg.adaptive_clip,
            "noise": "discrete_gaussian",
            "level": "user",
        },
    )
    budget_guard(parts, cfg, lambda rnd: acc.epsilon_after(z, rate, cfg.delta))


def build_local(parts: Parts) -> None:
    cfg, fed = parts.config.privacy, parts.config
    if cfg.secure_rng:
        require_opendp("privacy.secure_rng")
    z = noise_multiplier_for(cfg, 1.0, fed.rounds)  # worst case: a client in every round
    ledger = ParticipationLedger(z, cfg.accountant)
    # secure: every client draws from its own OS CSPRNG (None), nothing the server can redo
    noise = None if cfg.secure_rng else noise_source(False, fed.seed, "dp-local")
    hook = local_dp_hook(cfg.clip, z, noise, ledger, cfg.granularity)
    parts.add_transform(LOCAL_DP, hook, after=(ATTACK, CLIP))
    parts.stateful["privacy"] = ledger
    report(
        parts,
        cfg,
        lambda kind: ledger.max_epsilon_by(kind, cfg.delta),
        {
            "noise_multiplier": z,
            "clip": cfg.clip,
            "sensitivity": 2 * cfg.clip,
            "noise": "discrete_gaussian",
            "level": "user, local (max over clients)",
        },
    )
    budget_guard(parts, cfg, lambda rnd: ledger.max_epsilon(cfg.delta, extra=1))
