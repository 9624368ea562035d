"""An adapter over Opacus' accountants: the only place that knows ε.

A mechanism reports each release as ``step(noise_multiplier, sample_rate)``; the
accountant composes them (Opacus' PRV or RDP analysis of the sampled Gaussian mechanism)
and answers ``epsilon(delta)``. Its whole state is the step history, saved as JSON in the
checkpoint, so ε after a resume continues exactly where it stopped.

PRV (Gopi et al. 2021, Opacus' default) is numerical: for some histories it raises or
returns NaN or infinity. Then ε comes from RDP, a valid (looser) bound on the same
history, and ``last_kind`` says which analysis produced the latest answer.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import Any

import numpy as np
from opacus.accountants import RDPAccountant, create_accountant
from opacus.accountants.analysis import rdp as rdp_analysis
from opacus.accountants.utils import get_noise_multiplier

from fedloom.core.errors import ConfigError
from fedloom.privacy.config import AccountantName

_ALPHAS = tuple(RDPAccountant.DEFAULT_ALPHAS)


@lru_cache(maxsize=1024)
def _rdp_of_one_step(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    """Opacus' RDP curve of one sampled Gaussian step (about 1 s at large sample rates)."""
    return np.asarray(
        rdp_analysis.compute_rdp(
            q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=list(_ALPHAS)
        )
    )


_EPSILONS: dict[tuple[Any, ...], tuple[float, AccountantName]] = {}
"""ε by (kind, δ, history), shared by every accountant: DP-SGD clients with equal data
sizes have equal histories, and the budget guard and the metrics ask for the same ε."""


def _prv_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    """Opacus' PRV ε of ``history``; NaN when the numerical analysis fails."""
    inner = create_accountant(mechanism="prv")
    inner.history = list(history)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            # PRV bounds its domain with an RDP curve, whose order range Opacus warns about
            warnings.filterwarnings("ignore", "Optimal order is the", UserWarning)
            return float(inner.get_epsilon(delta=delta))
    except (ValueError, ArithmeticError, RuntimeError):
        return math.nan


def _rdp_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    """Opacus' RDPAccountant.get_privacy_spent, with each run's curve computed once (its
    compute_rdp is the one-step curve times the number of steps)."""
    rdp = sum(_rdp_of_one_step(float(sigma), float(q)) * int(n) for sigma, q, n in history)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Optimal order is the", UserWarning)
        eps, _ = rdp_analysis.get_privacy_spent(orders=list(_ALPHAS), rdp=rdp, delta=delta)
    return float(eps)


def epsilon_of(
    kind: AccountantName, history: list[tuple[float, float, int]], delta: float
) -> tuple[float, AccountantName]:
    """``(ε, the analysis that gave it)``: ``kind``'s, or RDP's where PRV fails."""
    if kind == "prv":
        eps = _prv_epsilon(history, delta)
        if math.isfinite(eps):
            return eps, "prv"
    return _rdp_epsilon(history, delta), "rdp"


class Accountant:
    def __init__(self, kind: AccountantName = "prv") -> None:
        self.kind = kind
        self._inner = create_accountant(mechanism=kind)
        self.last_kind: AccountantName = kind
        """The analysis behind the latest ``epsilon`` answer (``rdp`` after a PRV failure)."""

    @property
    def history(self) -> list[tuple[float, float, int]]:
        """Runs of identical steps: ``(noise_multiplier, sample_rate, num_steps)``."""
        return [tuple(h) for h in self._inner.history]  # type: ignore[misc]

    @property
    def steps(self) -> int:
        return sum(int(h[2]) for h in self._inner.history)

    def step(self, noise_multiplier: float, sample_rate: float, count: int = 1) -> None:
        if noise_multiplier < 0 or not 0 < sample_rate <= 1:
            raise ValueError(
                f"need noise_multiplier >= 0 and 0 < sample_rate <= 1, got "
                f"{noise_multiplier}, {sample_rate}"
            )
        for _ in range(count):
            self._inner.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)

    def epsilon(self, delta: float) -> float:
        """ε spent so far at this δ: 0 before any step, inf without noise."""
        eps, self.last_kind = self.epsilon_by(self.kind, delta)
        return eps

    def epsilon_by(self, kind: AccountantName, delta: float) -> tuple[float, AccountantName]:
        """``(ε, analysis used)`` by ``kind`` (PRV falls back to RDP), whatever ``self.kind``."""
        history = self.history
        if not history:
            return 0.0, kind
        if any(float(sigma) == 0.0 for sigma, _, _ in history):
            return math.inf, kind
        key = (kind, delta, *history)
        if key not in _EPSILONS:
            if len(_EPSILONS) > 4096:
                _EPSILONS.clear()
            _EPSILONS[key] = epsilon_of(kind, history, delta)
        return _EPSILONS[key]

    def epsilon_after(
        self, noise_multiplier: float, sample_rate: float, delta: float, steps: int = 1
    ) -> float:
        """ε if ``steps`` more such releases happened (the state is left unchanged)."""
        saved = [tuple(h) for h in self._inner.history]
        try:
            self.step(noise_multiplier, sample_rate, steps)
            return self.epsilon(delta)
        finally:
            self._inner.history = saved

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "history": [list(h) for h in self._inner.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ConfigError(
                [
                    f"privacy.accountant: the checkpoint used {state.get('kind')!r}, "
                    f"the config asks for {self.kind!r}"
                ]
            )
        self._inner.history = [(float(sigma), float(q), int(n)) for sigma, q, n in state["history"]]


@lru_cache(maxsize=1024)
def calibrate(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    kind: AccountantName = "prv",
    tolerance: float = 0.005,
) -> float:
    """The smallest noise multiplier (up to Opacus' bisection) whose ε after ``steps``
    releases at ``sample_rate`` is at most ``target_epsilon``: ε lands in
    [target − tolerance, target], within 1% below the target for target ≥ 0.5.
    Where PRV's analysis fails during the bisection, the multiplier is RDP's (larger,
    so the ε reported through the RDP fallback is within the target too)."""
    if kind == "prv":
        try:
            z = _calibrate(target_epsilon, delta, sample_rate, steps, "prv", tolerance)
            if math.isfinite(z) and math.isfinite(_prv_epsilon([(z, sample_rate, steps)], delta)):
                return z
        except (ArithmeticError, RuntimeError, ValueError):
            pass
    return _calibrate(target_epsilon, delta, sample_rate, steps, "rdp", tolerance)


def _calibrate(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    kind: AccountantName,
    tolerance: float,
) -> float:
    tol = min(tolerance, 0.005 * target_epsilon)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            # the bisection tries multipliers far too small, whose ε Opacus warns about
            warnings.filterwarnings("ignore", "Optimal order is the", UserWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(
                get_noise_multiplier(
                    target_epsilon=target_epsilon,
                    target_delta=delta,
                    sample_rate=sample_rate,
                    steps=steps,
                    accountant=kind,
                    epsilon_tolerance=tol,
                )
            )
    except ValueError as error:
        if kind == "prv":
            raise  # the caller falls back to RDP
        raise ConfigError(
            [f"privacy.target_epsilon={target_epsilon} is unreachable at δ={delta}: {error}"]
        ) from None
