"""An empirical lower bound on ε for the assembled central DP mechanism.

Membership game with a canary client (Jagielski et al. 2020; Nasr et al. 2021): in each
of ``trials`` independent runs of ``rounds`` DP-FedAvg aggregations, a coin decides
whether the canary user is in the population. If in, it is Poisson-sampled each round
with the run's rate and sends an update of norm 10·clip along a fixed direction u. The
other users' updates are taken as known to the attacker and subtracted (the worst case
the DP definition allows), so what remains is fedloom's own clipping, noise and
sampling code. The attacker scores a run by Σ_r ⟨release_r, u⟩ and guesses "in" above
a threshold chosen on the first half of the runs. On the second half, Clopper–Pearson
upper bounds on the false positive and false negative rates (each at 1 − α/2) give,
with confidence 1 − α, since any (ε, δ)-DP mechanism has FPR + e^ε·FNR ≥ 1 − δ:

    ε ≥ log((1 − δ − FNR⁺) / FPR⁺)   (and the same with the roles swapped).

A lower bound above the accountant's ε means the implementation leaks more than it
claims. ``broken`` switches off the noise or the clipping (positive controls).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
from scipy.stats import beta

from fedloom.config import FedConfig
from fedloom.core.errors import ConfigError
from fedloom.core.seeding import generator
from fedloom.core.tensors import Tensors
from fedloom.privacy.accountant import Accountant
from fedloom.privacy.central import CentralDPStrategy, CentralMechanism, DPSumAggregator
from fedloom.privacy.noise import SeededNoise

Broken = Literal["none", "no_noise", "no_clip"]
CANARY_NORM = 10.0
"""Canary update norm, in units of the clip: clipping has something to do."""


@dataclass(frozen=True)
class AuditResult:
    epsilon_lower: float
    epsilon_upper: float
    confidence: float
    trials: int
    fpr: float
    fnr: float
    broken: Broken

    @property
    def violation(self) -> bool:
        return self.epsilon_lower > self.epsilon_upper


class _Silent(SeededNoise):
    def normal(
        self, shape: torch.Size, std: float, dtype: torch.dtype, *keys: object
    ) -> torch.Tensor:
        return torch.zeros(shape, dtype=dtype)


def _canary(template: Tensors, clip: float, seed: int) -> Tensors:
    gen = generator(seed, "audit-canary")
    raw = {n: torch.randn(t.shape, generator=gen, dtype=torch.float64) for n, t in template.items()}
    norm = math.sqrt(sum(float(t.pow(2).sum()) for t in raw.values()))
    return {n: (t * (CANARY_NORM * clip / norm)).to(template[n].dtype) for n, t in raw.items()}


def _score(
    mech: CentralMechanism,
    template: Tensors,
    canary: Tensors,
    trial: int,
    rounds: int,
    member: bool,
    broken: Broken,
    seed: int,
) -> float:
    draws = torch.rand(rounds, generator=generator(seed, "audit-sample", trial))
    score = 0.0
    for r in range(rounds):
        agg = DPSumAggregator(mech, trial * rounds + r + 1, template)  # fresh noise per run
        if broken == "no_clip":
            agg.clip = math.inf
        if member and float(draws[r]) < mech.sample_rate:
            agg.add("canary", canary, {"num_examples": 1})
        released = agg.result()
        score += sum(float((released[n].double() * canary[n].double()).sum()) for n in canary)
    return score


def _upper(errors: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """Clopper–Pearson upper bounds on rates ``errors / n`` at confidence 1 − alpha."""
    errors = np.asarray(errors)
    bound = beta.ppf(1 - alpha, errors + 1, np.maximum(n - errors, 1))
    return np.where(errors >= n, 1.0, bound)


def _epsilons(
    scores: np.ndarray, members: np.ndarray, thresholds: np.ndarray, delta: float, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ε lower bound for guessing "in" at ``score >= t``, for each threshold t."""
    guess = scores[None, :] >= thresholds[:, None]
    neg, pos = int((~members).sum()), int(members.sum())
    fp, fn = (guess & ~members).sum(axis=1), (~guess & members).sum(axis=1)
    fpr, fnr = _upper(fp, neg, alpha / 2), _upper(fn, pos, alpha / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        both = np.maximum(np.log((1 - delta - fnr) / fpr), np.log((1 - delta - fpr) / fnr))
    return np.nan_to_num(np.maximum(both, 0.0), nan=0.0), fp / max(neg, 1), fn / max(pos, 1)


def _lower_bound(
    scores: np.ndarray, members: np.ndarray, delta: float, alpha: float
) -> tuple[float, float, float]:
    """Pick the threshold on the first half of the runs, bound ε on the second half
    (choosing and testing on the same runs would overstate the bound)."""
    half = len(scores) // 2
    candidates = np.unique(scores[:half])
    picked, _, _ = _epsilons(scores[:half], members[:half], candidates, delta, alpha)
    threshold = candidates[[int(np.argmax(picked))]]
    eps, fpr, fnr = _epsilons(scores[half:], members[half:], threshold, delta, alpha)
    return float(eps[0]), float(fpr[0]), float(fnr[0])


def audit_central(
    mech: CentralMechanism,
    template: Tensors,
    rounds: int,
    delta: float,
    *,
    trials: int = 1000,
    confidence: float = 0.95,
    broken: Broken = "none",
    seed: int = 0,
) -> AuditResult:
    """Run the membership game on ``mech`` (it is not changed, except its accountant)."""
    if mech.adaptive is not None:
        raise ConfigError(["fedloom audit: turn privacy.adaptive_clip off to audit"])
    if trials < 20:
        raise ConfigError([f"fedloom audit: trials must be >= 20, got {trials}"])
    upper = Accountant(mech.accountant.kind)
    upper.step(mech.noise_multiplier, mech.sample_rate, rounds)
    if broken == "no_noise":
        mech = replace(mech, noise=_Silent(seed, "silent"))
    canary = _canary(template, mech.clip, seed)
    members = torch.rand(trials, generator=generator(seed, "audit-members")).numpy() < 0.5
    scores = np.array(
        [
            _score(mech, template, canary, t, rounds, bool(members[t]), broken, seed)
            for t in range(trials)
        ]
    )
    eps, fpr, fnr = _lower_bound(scores, members, delta, 1 - confidence)
    return AuditResult(eps, upper.epsilon(delta), confidence, trials, fpr, fnr, broken)


def audit_config(
    config: FedConfig, *, trials: int = 1000, confidence: float = 0.95, broken: Broken = "none"
) -> AuditResult:
    """Assemble the federation ``config`` describes (nothing is trained or written) and
    audit its central DP mechanism over ``config.rounds`` rounds."""
    if config.privacy.mode != "central":
        raise ConfigError(
            [f"fedloom audit needs privacy.mode=central (got {config.privacy.mode!r})"]
        )
    from fedloom.experiment import Experiment  # the audit sits above assembly

    experiment = Experiment(config.model_copy(update={"output_dir": "/nonexistent-audit"}))
    strategy = experiment.parts.strategy
    if not isinstance(strategy, CentralDPStrategy):  # assembly time, not the round loop
        raise ConfigError(["fedloom audit: another feature replaced the DP strategy"])
    return audit_central(
        strategy.mech,
        strategy.template,
        config.rounds,
        config.privacy.delta,
        trials=trials,
        confidence=confidence,
        broken=broken,
        seed=config.seed,
    )
