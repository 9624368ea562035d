"""An empirical lower bound on ε for central DP, local DP or DP-SGD, on a real federation.

What is audited: the configured federation (its data, clients, sampler, codecs,
transport, validation, DP aggregator or local mechanism, and noise source) runs
``canaries`` rounds. Round r has a fresh canary client with a crafted update (norm
10·clip along a random direction u_r) and an independent fair coin b_r
(``fedloom.privacy.canary``). Central: the coin adds the canary to the round's
participants. Local: the canary takes part in every round and the coin is the sign of
its update (two inputs at the mechanism's sensitivity 2·clip). DP-SGD: client 0 takes
part in every round until ``canaries`` of its DP-SGD steps are played; step t has a
gradient canary (``fedloom.privacy.sgd_canary``: a per-sample gradient of norm
10·clip along u_t, added to Opacus' per-sample gradients) when its coin b_t says so.

Threat model: a white-box auditor sees every round's release. Central: it knows the
other participants' updates and scores round r by s_r = ⟨qN·release_r − Σ others,
u_r⟩ / clip (the canary's clipped share, 1, plus noise), guessing b_r = 1 exactly when
s_r > ½. Local: it scores the canary's own release, ⟨release_r, u_r⟩ / clip, and
guesses "+" when positive. DP-SGD: it sees each step's noisy clipped-gradient sum,
knows the other samples' per-sample gradients, and scores step t by ⟨release_t − Σ
clipped others, u_t⟩ / clip, guessing "in" when above ½. Every round (step) is guessed
(no abstention).

The claim tested: the guarantee the accountant composes, per round. Conditionally on
everything released before, round r must be (ε(δ), δ)-DP for its canary for every δ,
where ε(δ) is the accountant's ε of one Gaussian step with the configured noise
multiplier at sample rate 1 (the canary is always sampled; DP-SGD: "round" reads
"step", the multiplier is the audited client's z_k, the sensitivity clip). Then any
guess of b_r is right with probability at most p(δ) = (e^ε(δ) + δ) / (1 + e^ε(δ))
given the past, so
the number W of right guesses in n rounds is stochastically dominated by
Binomial(n, p) (the one-run argument of Steinke, Nasr and Jagielski 2023, "Privacy
Auditing with One (1) Training Run", with one canary per round in sequence in place of
their m canaries in one release, hence no m·δ term). The audit tests at the δ* that
makes p smallest (a function of the claim only, so the test stays sound).

Bound: with p⁻ the one-sided Clopper–Pearson lower bound on the accuracy W / n at
confidence 1 − α, ε ≥ log((p⁻ − δ*) / (1 − p⁻)) with confidence 1 − α. A mechanism that
meets its claim is flagged with probability at most α. Sampling amplification and
composition over rounds are the accountant's mathematics and are not audited.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from scipy.stats import beta

from fedloom.client.client import Client
from fedloom.client.context import UpdateHook
from fedloom.client.trainer import planned_steps
from fedloom.config import FedConfig
from fedloom.core.errors import ConfigError, FedloomError
from fedloom.core.seeding import generator
from fedloom.privacy.accountant import Accountant
from fedloom.privacy.canary import (
    CanaryRecorder,
    CanarySampler,
    CanaryTrainer,
    IncludingSampler,
    ReleaseRecorder,
    ScaledNoise,
    canary_id,
)
from fedloom.privacy.central import CentralDPStrategy
from fedloom.privacy.config import AccountantName
from fedloom.privacy.dpsgd import DPSGDTrainer
from fedloom.privacy.local import ParticipationLedger, local_dp_hook
from fedloom.privacy.noise import noise_source
from fedloom.privacy.sgd_canary import CanaryDPSGDTrainer, GradientCanaries
from fedloom.server.server import Server
from fedloom.server.strategy import Strategy

if TYPE_CHECKING:
    from fedloom.experiment import Experiment

Broken = Literal["none", "half_noise", "no_noise", "no_clip"]
BROKEN: tuple[Broken, ...] = ("none", "half_noise", "no_noise", "no_clip")
NOISE_FACTOR: dict[Broken, float] = {
    "none": 1.0,
    "half_noise": 0.5,
    "no_noise": 0.0,
    "no_clip": 1.0,
}
"""Positive controls: the noise scaled down, or (``no_clip``) the server not clipping."""
GUESS_THRESHOLD = 0.5
"""Central: guess "in" when the score exceeds half the clipped canary's share."""
DELTA_GRID_SIZE = 40


def max_accuracy(epsilon: float, delta: float) -> float:
    """The highest probability with which anyone can guess a fair coin from an
    (ε, δ)-DP release: (e^ε + δ) / (1 + e^ε)."""
    if math.isinf(epsilon):
        return 1.0
    return min(1.0, (math.exp(epsilon) + delta) / (1 + math.exp(epsilon)))


def accuracy_lower(correct: int, guesses: int, alpha: float) -> float:
    """One-sided Clopper–Pearson lower bound on the accuracy ``correct / guesses``:
    the p at which P[Binomial(guesses, p) ≥ correct] = alpha."""
    if not 0 <= correct <= guesses or guesses < 1:
        raise ValueError(f"need 0 <= correct <= guesses and guesses >= 1: {correct}/{guesses}")
    return 0.0 if correct == 0 else float(beta.ppf(alpha, correct, guesses - correct + 1))


def epsilon_lower(correct: int, guesses: int, delta: float, alpha: float) -> float:
    """ε that no (ε, δ)-DP round can have, with confidence 1 − alpha: the largest ε
    with max_accuracy(ε, δ) below the accuracy's lower bound (0 if none)."""
    p = accuracy_lower(correct, guesses, alpha)
    if p <= (1 + delta) / 2:
        return 0.0
    return math.log((p - delta) / (1 - p)) if p < 1 else math.inf


@dataclass(frozen=True)
class Claim:
    """The accountant's per-round guarantee at the δ where it is easiest to test."""

    delta: float
    epsilon: float
    max_accuracy: float


def _claims(acc: Accountant, deltas: np.ndarray) -> list[Claim]:
    out = []
    for d in deltas:
        eps = max(0.0, acc.epsilon(float(d)))  # PRV is numerical: tiny negatives at large δ
        out.append(Claim(float(d), eps, max_accuracy(eps, float(d))))
    return out


@lru_cache(maxsize=64)
def per_round_claim(kind: AccountantName, noise_multiplier: float, delta: float) -> Claim:
    """The accountant's ε(δ) for one Gaussian step at rate 1 with ``noise_multiplier``,
    at the δ in [``delta``, 0.99] that bounds a guess's accuracy the most (a log grid,
    then a finer one around its best point)."""
    if noise_multiplier == 0:
        return Claim(delta, math.inf, 1.0)
    acc = Accountant(kind)
    acc.step(noise_multiplier, 1.0)
    grid = np.geomspace(delta, 0.99, DELTA_GRID_SIZE)
    coarse = _claims(acc, grid)
    i = min(range(len(coarse)), key=lambda k: coarse[k].max_accuracy)
    fine = np.geomspace(grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)], DELTA_GRID_SIZE)
    return min([*coarse, *_claims(acc, fine)], key=lambda c: c.max_accuracy)


@dataclass(frozen=True)
class AuditResult:
    epsilon_lower: float
    """Empirical lower bound on the per-round ε at ``delta`` (confidence ``confidence``)."""
    epsilon_claimed: float
    """The accountant's per-round ε at ``delta`` (one step, sample rate 1)."""
    delta: float
    confidence: float
    canaries: int
    correct: int
    accuracy_lower: float
    max_accuracy: float
    run_epsilon: float
    """The accountant's ε for the whole configured run at ``run_delta`` (for reference)."""
    run_delta: float
    broken: Broken
    unit: Literal["round", "step"] = "round"
    """What one canary is tested in: a federation round, or one client's DP-SGD step."""

    @property
    def violation(self) -> bool:
        """The canaries were guessed better than any mechanism meeting the claim allows."""
        return self.accuracy_lower > self.max_accuracy


@dataclass(frozen=True)
class Game:
    """One mode's canary game, played: the scores and what the claim is made of."""

    scores: list[float]
    threshold: float
    """Guess "in" (or "+") when the score exceeds this."""
    noise_multiplier: float
    kind: AccountantName
    run_epsilon: float
    """The accountant's ε for the whole configured run at ``privacy.delta``."""


def _play(
    experiment: Experiment,
    strategy: Strategy,
    trainer: CanaryTrainer,
    hooks: list[UpdateHook],
    present: list[bool],
) -> None:
    """Run ``len(present)`` rounds of the federation plus round r's canary where
    ``present[r − 1]``; ``strategy`` (a recorder) keeps the scores."""
    parts, real = experiment.parts, experiment.clients
    workspace, data = copy.deepcopy(parts.model), next(iter(real.values())).data
    canaries = {
        canary_id(r): Client(
            canary_id(r),
            data,
            workspace,
            trainer,
            seed=experiment.config.seed,
            down=parts.down,
            up=parts.up,
            hooks=hooks,
        )
        for r in range(1, len(present) + 1)
    }
    handlers = {cid: c.handle for cid, c in {**real, **canaries}.items()}
    server = Server(
        global_state=experiment.server.global_state,
        client_ids=[*real, *canaries],
        strategy=strategy,
        sampler=CanarySampler(experiment.server.sampler, len(real), present),
        transport=parts.transport(handlers),
        down=parts.down,
        up=parts.up,
        weighting=experiment.server.weighting,
    )
    server.run(len(present))


def central_game(experiment: Experiment, coins: list[bool], broken: Broken, seed: int) -> Game:
    """Round r's canary joins when ``coins[r − 1]``; scored on the round's aggregate."""
    strategy = experiment.parts.strategy
    if not isinstance(strategy, CentralDPStrategy):  # assembly time, not the round loop
        raise ConfigError(["fedloom audit: another feature replaced the DP strategy"])
    mech = strategy.mech
    if NOISE_FACTOR[broken] != 1.0:
        mech.noise = ScaledNoise(mech.noise, NOISE_FACTOR[broken])
    recorder = CanaryRecorder(strategy, seed, server_clip=broken != "no_clip")
    trainer = CanaryTrainer(experiment.parts.trainer.config, mech.clip, seed)
    _play(experiment, recorder, trainer, [], coins)
    run = Accountant(mech.accountant.kind)
    run.step(mech.noise_multiplier, mech.sample_rate, experiment.config.rounds)
    return Game(
        [recorder.scores[r] for r in range(1, len(coins) + 1)],
        GUESS_THRESHOLD,
        mech.noise_multiplier,
        mech.accountant.kind,
        run.epsilon(experiment.config.privacy.delta),
    )


def local_game(experiment: Experiment, coins: list[bool], broken: Broken, seed: int) -> Game:
    """Round r's canary sends ± its direction (``coins[r − 1]``: +) through the local
    mechanism, as ``build_local`` configures it; scored on its own release."""
    if broken == "no_clip":
        raise ConfigError(["fedloom audit: --broken no_clip is a control of privacy.mode=central"])
    parts = experiment.parts
    cfg, ledger = parts.config.privacy, parts.stateful.get("privacy")
    if not isinstance(ledger, ParticipationLedger):  # assembly time, not the round loop
        raise ConfigError(["fedloom audit: another feature replaced the local DP ledger"])
    z = ledger.noise_multiplier
    source = noise_source(cfg.secure_rng, parts.config.seed, "dp-local")
    source = ScaledNoise(source, NOISE_FACTOR[broken])
    hook = local_dp_hook(
        cfg.clip, z, source, ParticipationLedger(z, cfg.accountant), cfg.granularity
    )
    recorder = ReleaseRecorder(parts.strategy, seed, cfg.clip)
    trainer = CanaryTrainer(parts.trainer.config, cfg.clip, seed, signs=coins)
    _play(experiment, recorder, trainer, [hook], [True] * len(coins))
    return Game(
        [recorder.scores[r] for r in range(1, len(coins) + 1)],
        0.0,
        z,
        cfg.accountant,
        ledger.epsilon_for(experiment.config.rounds, cfg.delta),  # a client in every round
    )


AUDITED_CLIENT = "0"
"""DP-SGD: the client whose local training carries the gradient canaries."""


def dpsgd_game(experiment: Experiment, coins: list[bool], broken: Broken, seed: int) -> Game:
    """Step t of client ``AUDITED_CLIENT``'s DP-SGD gets a gradient canary when
    ``coins[t]``; the client takes part in every round until every coin is played."""
    if broken == "no_clip":
        raise ConfigError(["fedloom audit: --broken no_clip is a control of privacy.mode=central"])
    parts, clients = experiment.parts, experiment.clients
    trainer = parts.trainer
    if not isinstance(trainer, DPSGDTrainer):  # assembly time, not the round loop
        raise ConfigError(["fedloom audit: another feature replaced the DP-SGD trainer"])
    n = len(clients[AUDITED_CLIENT].data)
    steps = planned_steps(trainer.config, n)
    if steps == 0:
        raise ConfigError([f"fedloom audit: client {AUDITED_CLIENT} has no training data"])
    canaries = GradientCanaries(coins, seed, trainer.clip, AUDITED_CLIENT)
    audited = CanaryDPSGDTrainer(
        trainer, ScaledNoise(trainer.noise, NOISE_FACTOR[broken]), canaries
    )
    for client in clients.values():
        client.trainer = audited
    server = Server(
        global_state=experiment.server.global_state,
        client_ids=list(clients),
        strategy=parts.strategy,
        sampler=IncludingSampler(experiment.server.sampler, list(clients).index(AUDITED_CLIENT)),
        transport=parts.transport({cid: c.handle for cid, c in clients.items()}),
        down=parts.down,
        up=parts.up,
        weighting=experiment.server.weighting,
    )
    server.run(math.ceil(len(coins) / steps))
    if len(canaries.scores) != len(coins):
        raise FedloomError(
            f"fedloom audit: {len(canaries.scores)} of {len(coins)} canary steps were seen; "
            "the DP-SGD audit needs clients trained in this process (no process pool)"
        )
    z = trainer.noise_multipliers[AUDITED_CLIENT]
    run = Accountant(trainer.ledgers.kind)
    run.step(z, min(trainer.config.batch_size or n, n) / n, steps * experiment.config.rounds)
    return Game(
        canaries.scores,
        GUESS_THRESHOLD,
        z,
        trainer.ledgers.kind,
        run.epsilon(experiment.config.privacy.delta),
    )


_GAMES: dict[str, Callable[[Experiment, list[bool], Broken, int], Game]] = {
    "central": central_game,
    "local": local_game,
    "dpsgd": dpsgd_game,
}


def audit_config(
    config: FedConfig,
    *,
    canaries: int = 200,
    confidence: float = 0.95,
    broken: Broken = "none",
) -> AuditResult:
    """Assemble the federation ``config`` describes and audit its central or local DP
    mechanism with ``canaries`` rounds, one canary each, or its DP-SGD with ``canaries``
    steps of one client, one gradient canary each (nothing is written to disk)."""
    cfg = config.privacy
    if cfg.mode not in _GAMES:
        raise ConfigError(
            [f"fedloom audit needs privacy.mode=central, local or dpsgd (got {cfg.mode!r})"]
        )
    if cfg.adaptive_clip:
        raise ConfigError(["fedloom audit: turn privacy.adaptive_clip off to audit"])
    if cfg.schedule != "constant" or cfg.tiers:
        raise ConfigError(
            [
                "fedloom audit checks one constant multiplier: set privacy.schedule=constant "
                "and no privacy.tiers to audit the mechanism"
            ]
        )
    if canaries < 20:
        raise ConfigError([f"fedloom audit: canaries must be >= 20, got {canaries}"])
    if broken not in BROKEN:
        raise ConfigError([f"fedloom audit: broken must be one of {', '.join(BROKEN)}"])
    from fedloom.experiment import Experiment  # the audit sits above assembly

    experiment = Experiment(config.model_copy(update={"output_dir": "/nonexistent-audit"}))
    coins = (torch.rand(canaries, generator=generator(config.seed, "audit-coins")) < 0.5).tolist()
    game = _GAMES[cfg.mode](experiment, coins, broken, config.seed)
    claim = per_round_claim(game.kind, game.noise_multiplier, cfg.delta)
    correct = sum((s > game.threshold) == b for s, b in zip(game.scores, coins, strict=True))
    alpha = 1 - confidence
    return AuditResult(
        epsilon_lower=epsilon_lower(correct, canaries, claim.delta, alpha),
        epsilon_claimed=claim.epsilon,
        delta=claim.delta,
        confidence=confidence,
        canaries=canaries,
        correct=correct,
        accuracy_lower=accuracy_lower(correct, canaries, alpha),
        max_accuracy=claim.max_accuracy,
        run_epsilon=game.run_epsilon,
        run_delta=cfg.delta,
        broken=broken,
        unit="step" if cfg.mode == "dpsgd" else "round",
    )
