"""Noise schedules: the noise multiplier of each round, constant within a round.

A schedule is a shape (round 1 has ratio 1; ``linear`` and ``cosine`` end at
``final_noise_ratio``; ``step`` follows ``schedule_steps``) times one scale factor: the
configured ``noise_multiplier`` (the first round's), or the factor calibrated so that ε
after ``rounds`` lands just below ``target_epsilon``. With the PRV accountant a schedule
with more than ``MAX_LEVELS`` distinct ratios is quantized to that many levels (evenly
spaced between its smallest and largest ratio, each round snapped to the nearest): PRV
composes one numerical distribution per distinct multiplier, about 0.15 s each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedloom.privacy.config import AccountantName, PrivacyConfig

MAX_LEVELS = 20
"""Most distinct multipliers a PRV-accounted schedule uses."""

History = list[tuple[float, float, int]]


def shape(cfg: PrivacyConfig, rounds: int) -> list[float]:
    """The ratio of each round's multiplier to the first round's, rounds 1..``rounds``."""
    span = max(rounds - 1, 1)
    final = cfg.final_noise_ratio
    if cfg.schedule == "linear":
        return [1 + (final - 1) * r / span for r in range(rounds)]
    if cfg.schedule == "cosine":
        return [final + (1 - final) * (1 + math.cos(math.pi * r / span)) / 2 for r in range(rounds)]
    if cfg.schedule == "step":
        ratios, current, steps = [], 1.0, dict(cfg.schedule_steps)
        for rnd in range(1, rounds + 1):
            current = steps.get(rnd, current)
            ratios.append(current)
        return ratios
    return [1.0] * rounds


def quantize(ratios: list[float], levels: int = MAX_LEVELS) -> list[float]:
    """``ratios`` snapped to ``levels`` evenly spaced values when it has more distinct ones."""
    if len(set(ratios)) <= levels:
        return list(ratios)
    low, high = min(ratios), max(ratios)
    grid = [low + (high - low) * i / (levels - 1) for i in range(levels)]
    return [min(grid, key=lambda g: abs(g - r)) for r in ratios]


def ratios_for(cfg: PrivacyConfig, rounds: int) -> list[float]:
    """The schedule's shape, quantized where the PRV accountant needs it."""
    ratios = shape(cfg, rounds)
    return quantize(ratios) if cfg.accountant == "prv" else ratios


def round_history(multipliers: list[float], rate: float, steps: int) -> History:
    """The accountant history of ``steps`` steps per round at ``rate`` with each round's
    multiplier, consecutive equal rounds merged as Opacus' accountants merge them."""
    history: History = []
    for z in multipliers:
        if history and history[-1][0] == z and history[-1][1] == rate:
            history[-1] = (z, rate, history[-1][2] + steps)
        else:
            history.append((z, rate, steps))
    return history


@dataclass(frozen=True)
class NoiseSchedule:
    """The multiplier of each planned round; a round past the plan keeps the last one."""

    multipliers: tuple[float, ...]

    def at(self, rnd: int) -> float:
        return self.multipliers[min(max(rnd, 1), len(self.multipliers)) - 1]

    @property
    def constant(self) -> bool:
        return len(set(self.multipliers)) == 1

    @classmethod
    def scaled(cls, scale: float, ratios: list[float]) -> NoiseSchedule:
        return cls(tuple(scale * r for r in ratios))


def describe(kind: AccountantName, ratios: list[float], cfg: PrivacyConfig) -> dict[str, object]:
    """Facts for summary.json: the schedule and whether it was quantized."""
    facts: dict[str, object] = {"schedule": cfg.schedule}
    if cfg.schedule != "constant":
        facts["noise_levels"] = len(set(ratios))
        facts["quantized"] = kind == "prv" and len(set(shape(cfg, len(ratios)))) > MAX_LEVELS
    return facts
