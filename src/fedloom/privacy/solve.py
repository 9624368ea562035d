"""Calibration of heterogeneous plans: one scale factor for a noise schedule, or one
sampling rate for a tier, found by a bracketed root search on the accountant's own ε.

ε is monotone in both (decreasing in the noise scale, increasing in the rate), so a
regula falsi (Illinois variant) in log space needs a handful of ε evaluations; the search
stops once ε lies in [``LOW``, 1] times the target, so the calibrated plan spends between
98% and 100% of its budget. Every ε comes from ``fedloom.privacy.accountant.epsilon_of``,
the function that reports ε during the run, on the very history the run will record.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

from fedloom.core.errors import ConfigError
from fedloom.privacy.accountant import calibrate, epsilon_of
from fedloom.privacy.config import AccountantName
from fedloom.privacy.schedule import round_history

LOW = 0.98
"""The calibrated ε lands in [LOW, 1] × target."""
_AIM = 0.99


def _epsilon(kind: AccountantName, history: list[tuple[float, float, int]], delta: float) -> float:
    return _cached_epsilon(kind, tuple(history), delta)


@lru_cache(maxsize=4096)
def _cached_epsilon(
    kind: AccountantName, history: tuple[tuple[float, float, int], ...], delta: float
) -> float:
    return epsilon_of(kind, list(history), delta)[0]


def _root(
    f: Callable[[float], float], x0: float, step: float, done: Callable[[float], bool]
) -> float:
    """x with ``done(x)``, for f increasing in x with a root near ``x0``; f(x) = log ε(x) −
    log(aim). Brackets by steps of ``step`` then narrows by Illinois' regula falsi."""
    a, fa = x0, f(x0)
    if done(a):
        return a
    direction = -1.0 if fa > 0 else 1.0
    b, fb = a, fa
    for _ in range(60):
        b = a + direction * step
        fb = f(b)
        if done(b):
            return b
        if (fb > 0) != (fa > 0):
            break
        a, fa = b, fb
        step *= 1.5
    else:
        raise ArithmeticError("no bracket")
    side = 0
    for _ in range(60):
        c = b - fb * (b - a) / (fb - fa) if fb != fa else (a + b) / 2
        fc = f(c)
        if done(c):
            return c
        if (fc > 0) == (fb > 0):
            b, fb = c, fc
            if side == -1:
                fa /= 2
            side = -1
        else:
            a, fa = c, fc
            if side == 1:
                fb /= 2
            side = 1
    raise ArithmeticError("no convergence")


@lru_cache(maxsize=256)
def calibrate_scale(
    target: float,
    delta: float,
    rate: float,
    steps: int,
    ratios: tuple[float, ...],
    kind: AccountantName,
) -> float:
    """The scale c such that rounds with multipliers c·ratios[r], each ``steps`` steps at
    ``rate``, spend ε in [LOW, 1]·``target``."""
    rounds = len(ratios)
    if len(set(ratios)) == 1:
        return calibrate(target, delta, rate, steps * rounds, kind) / ratios[0]
    # a constant schedule with the same Σ 1/σ² is a close first guess
    flat = calibrate(target, delta, rate, steps * rounds, kind)
    guess = flat * math.sqrt(sum(r**-2 for r in ratios) / rounds)

    def f(log_c: float) -> float:  # increasing in log c after the sign flip
        eps = _epsilon(
            kind, round_history([math.exp(log_c) * r for r in ratios], rate, steps), delta
        )
        return -(math.log(eps) - math.log(_AIM * target)) if eps > 0 else math.inf

    def done(log_c: float) -> bool:
        eps = _epsilon(
            kind, round_history([math.exp(log_c) * r for r in ratios], rate, steps), delta
        )
        return LOW * target <= eps <= target

    try:
        return math.exp(_root(f, math.log(guess), 0.1, done))
    except ArithmeticError:
        raise ConfigError(
            [
                f"privacy: no noise scale reaches epsilon={target} at delta={delta} "
                "with this schedule"
            ]
        ) from None


@lru_cache(maxsize=256)
def calibrate_rate(
    target: float,
    delta: float,
    multipliers: tuple[float, ...],
    steps: int,
    kind: AccountantName,
) -> float:
    """The sampling rate at which rounds with ``multipliers`` (``steps`` steps each) spend ε
    in [LOW, 1]·``target``; 1.0 when even rate 1 spends at most the target."""

    def eps_at(rate: float) -> float:
        return _epsilon(kind, round_history(list(multipliers), rate, steps), delta)

    if eps_at(1.0) <= target:
        return 1.0

    def f(log_q: float) -> float:
        eps = eps_at(min(1.0, math.exp(log_q)))
        return math.log(eps) - math.log(_AIM * target) if eps > 0 else -math.inf

    def done(log_q: float) -> bool:
        return log_q <= 0 and LOW * target <= eps_at(math.exp(log_q)) <= target

    try:
        return min(1.0, math.exp(_root(f, math.log(0.01), 0.7, done)))
    except ArithmeticError:
        raise ConfigError(
            [f"privacy.tiers: no sampling rate reaches epsilon={target} at delta={delta}"]
        ) from None


def releases_within(
    target: float, delta: float, multipliers: tuple[float, ...], kind: AccountantName
) -> int:
    """The most releases (rate 1, local DP) a client can make within ``target`` in the worst
    case: its releases fall in the rounds with the smallest multipliers."""
    ordered = sorted(multipliers)
    count = 0
    while count < len(ordered):
        history = round_history(ordered[: count + 1], 1.0, 1)
        if _epsilon(kind, history, delta) > target:
            break
        count += 1
    return count
