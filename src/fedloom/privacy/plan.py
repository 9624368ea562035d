"""The privacy plan of a run, fixed before round 1: each round's noise multiplier (the
schedule, one scale factor calibrated or configured) and, with tiers, each tier's rate.

Everything here is a pure function of the config (and the number of clients), so a
resumed run recomputes the same plan; a resume that changes ``rounds`` is refused when
the plan depends on it (``fedloom.rundir``).
"""

from __future__ import annotations

from collections.abc import Sequence

from fedloom.core.errors import ConfigError
from fedloom.privacy.config import PrivacyConfig
from fedloom.privacy.schedule import NoiseSchedule, ratios_for
from fedloom.privacy.solve import calibrate_rate, calibrate_scale, releases_within
from fedloom.privacy.tiers import strictest


def _scale(
    cfg: PrivacyConfig, target: float, rate: float, steps: int, ratios: list[float]
) -> float:
    return calibrate_scale(target, cfg.delta, rate, steps, tuple(ratios), cfg.accountant)


def schedule_for(cfg: PrivacyConfig, rate: float, steps: int, rounds: int) -> NoiseSchedule:
    """Each round's multiplier for a mechanism of ``steps`` steps per round at ``rate``:
    the configured ``noise_multiplier`` as the first round's, or the scale that spends
    ``target_epsilon`` (with tiers: the strictest tier's budget at ``rate``) in ``rounds``."""
    ratios = ratios_for(cfg, rounds)
    if cfg.noise_multiplier is not None:
        return NoiseSchedule.scaled(cfg.noise_multiplier, ratios)
    if cfg.tiers:
        target = cfg.tiers[strictest(cfg)].epsilon
    elif cfg.target_epsilon is not None:
        target = cfg.target_epsilon
    else:
        raise ConfigError(["privacy: set noise_multiplier or target_epsilon"])
    return NoiseSchedule.scaled(_scale(cfg, target, rate, steps, ratios), ratios)


def local_schedule(cfg: PrivacyConfig, base_rate: float, rounds: int) -> NoiseSchedule:
    """Local DP: without tiers, calibrated for a client in every round; with tiers, for a
    client of the strictest tier taking part in ``round(base_rate · rounds)`` rounds, the
    ones with the least noise (worst case)."""
    ratios = ratios_for(cfg, rounds)
    if cfg.noise_multiplier is not None:
        return NoiseSchedule.scaled(cfg.noise_multiplier, ratios)
    if not cfg.tiers:
        return schedule_for(cfg, 1.0, 1, rounds)
    releases = max(1, round(base_rate * rounds))
    worst = sorted(ratios)[:releases]
    scale = _scale(cfg, cfg.tiers[strictest(cfg)].epsilon, 1.0, 1, worst)
    return NoiseSchedule.scaled(scale, ratios)


def tier_rates(
    cfg: PrivacyConfig,
    schedule: NoiseSchedule,
    base_rate: float,
    steps: Sequence[int],
    rounds: int,
) -> tuple[float, ...]:
    """Each tier's sampling rate: solved so the tier spends [0.98, 1] of its budget in
    ``rounds`` (capped at 1); with a calibrated multiplier the strictest tier keeps
    ``base_rate``, for which the multiplier was calibrated."""
    planned = schedule.multipliers[:rounds]
    rates = []
    for t, tier in enumerate(cfg.tiers):
        if cfg.noise_multiplier is None and tier.epsilon == cfg.tiers[strictest(cfg)].epsilon:
            rates.append(base_rate)
        else:
            rates.append(calibrate_rate(tier.epsilon, cfg.delta, planned, steps[t], cfg.accountant))
    return tuple(rates)


def local_tier_rates(
    cfg: PrivacyConfig, schedule: NoiseSchedule, base_rate: float, rounds: int
) -> tuple[float, ...]:
    """Local DP: each tier's participation probability, (most releases within its budget,
    worst case) / ``rounds``, capped at 1; with a calibrated multiplier the strictest
    tier keeps ``base_rate``."""
    planned = schedule.multipliers[:rounds]
    rates = []
    for tier in cfg.tiers:
        if cfg.noise_multiplier is None and tier.epsilon == cfg.tiers[strictest(cfg)].epsilon:
            rates.append(base_rate)
            continue
        allowed = releases_within(tier.epsilon, cfg.delta, planned, cfg.accountant)
        rates.append(min(1.0, allowed / rounds))
    return tuple(rates)
