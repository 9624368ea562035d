"""Sample-level DP-SGD inside each client's local training, through Opacus.

Per step: a Poisson-sampled minibatch (each local example with probability q = B/n_k,
the sampling Opacus' accountant assumes; drawn from the client's seeded generator, or
from the OS's CSPRNG with ``privacy.secure_rng``: Opacus' own secure mode needs
torchcsprng, which does not exist for this torch), per-sample gradients from Opacus'
``GradSampleModule``, each clipped to ``privacy.clip`` and summed, Gaussian noise
``N(0, (z_k·clip)²)`` added by Opacus' ``DPOptimizer`` (our subclass only chooses where
the noise comes from: a generator keyed by (round, client, step) or the OS's CSPRNG),
then divided by the expected batch size B.

With ``target_epsilon`` each client k gets its own multiplier z_k, calibrated from its
own rate q_k and its own steps (``rounds`` times its steps per round, as if sampled
every round), so every client's ε lands just below the target. Each client is accounted
on its own history ``(z_k, q_k, steps)``; the metrics report the largest ε over clients.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from opacus.validators import ModuleValidator
from torch import Tensor, nn

from fedloom.client.context import FitContext, TrainResult
from fedloom.client.trainer import LocalTrainer, TrainConfig, planned_steps
from fedloom.core.errors import ConfigError
from fedloom.data.base import Split
from fedloom.parts import Parts
from fedloom.privacy.accountant import Accountant
from fedloom.privacy.budget import budget_guard, report
from fedloom.privacy.config import AccountantName, PrivacyConfig
from fedloom.privacy.modes import report_tiers
from fedloom.privacy.noise import NoiseSource, noise_source, poisson_mask
from fedloom.privacy.plan import schedule_for, tier_rates
from fedloom.privacy.schedule import NoiseSchedule, describe, ratios_for
from fedloom.privacy.tiers import TierBook, assign_tiers, strictest, tier_facts
from fedloom.server.sampler import Sampler


class KeyedNoiseDPOptimizer(DPOptimizer):
    """Opacus' DPOptimizer; the noise is drawn from a fedloom ``NoiseSource``."""

    def __init__(self, *args: Any, noise: NoiseSource, keys: tuple[object, ...], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.noise, self.keys, self.step_index = noise, keys, 0

    def add_noise(self) -> None:
        std = self.noise_multiplier * self.max_grad_norm
        for i, p in enumerate(self.params):
            _check_processed_flag(p.summed_grad)
            draw = self.noise.normal(
                p.summed_grad.shape, std, p.summed_grad.dtype, *self.keys, self.step_index, i
            )
            p.grad = (p.summed_grad + draw).view_as(p)
            _mark_as_processed(p.summed_grad)
        self.step_index += 1


@dataclass(frozen=True)
class Plan:
    """One client's round: its multiplier, its Poisson rate B/n_k and its local steps."""

    noise_multiplier: float
    rate: float
    steps: int


def client_plans(
    cfg: PrivacyConfig, train: TrainConfig, sizes: list[int], rounds: int
) -> dict[str, Plan]:
    """Each client's plan; a calibrated multiplier (the scale of the schedule: round 1's)
    comes from that client's own rate and steps over ``rounds`` rounds (the worst case:
    sampled every round)."""
    plans = {}
    for k, n in enumerate(sizes):
        rate, steps = min(train.batch_size or n, n) / n, planned_steps(train, n)
        scale = schedule_for(cfg, rate, steps, rounds).at(1)
        plans[str(k)] = Plan(scale, rate, steps)
    return plans


def tier_plans(
    cfg: PrivacyConfig, train: TrainConfig, sizes: list[int], rounds: int, seed: int
) -> tuple[dict[str, Plan], TierBook, NoiseSchedule, float]:
    """Tiers in DP-SGD: one shared schedule; the tier sets the Poisson rate of its clients'
    samples. A tier is accounted with the most local steps any member runs, as if every
    member trained every round (an upper bound on each member's ε). With only budgets,
    the schedule is calibrated so that the strictest tier samples at the base rate
    ``B / median(n_k)``."""
    tier_of = assign_tiers(cfg.tiers, len(sizes), seed)
    steps = [planned_steps(train, n) for n in sizes]
    tier_steps = tuple(
        max((s for s, t in zip(steps, tier_of, strict=True) if t == i), default=1)
        for i in range(len(cfg.tiers))
    )
    ordered = sorted(sizes)
    median = max(1, ordered[len(ordered) // 2])
    base = min(1.0, (train.batch_size or median) / median)
    schedule = schedule_for(cfg, base, tier_steps[strictest(cfg)], rounds)
    rates = tier_rates(cfg, schedule, base, tier_steps, rounds)
    book = TierBook(
        tier_of=tier_of,
        targets=tuple(t.epsilon for t in cfg.tiers),
        rates=rates,
        steps=tier_steps,
        kind=cfg.accountant,
        delta=cfg.delta,
        max_epsilon=cfg.max_epsilon,
        multiplier_at=schedule.at,
    )
    scale = schedule.at(1)
    plans = {str(k): Plan(scale, rates[tier_of[k]], steps[k]) for k in range(len(sizes))}
    return plans, book, schedule, base


class TierFilter:
    """The run's sampler, less the clients of tiers spent before the round; each round
    is accounted to its tiers when it is sampled (before it runs)."""

    def __init__(self, inner: Sampler, book: TierBook) -> None:
        self.inner, self.book = inner, book

    @property
    def expected_per_round(self) -> float:
        return self.inner.expected_per_round

    def sample(self, rnd: int) -> list[int]:
        active = self.book.active(rnd)
        self.book.record(rnd)
        return [k for k in self.inner.sample(rnd) if active[self.book.tier_of[k]]]


class ClientLedgers:
    """Each client's accountant history (checkpointed); ε is read from it when asked."""

    def __init__(self, kind: AccountantName, delta: float) -> None:
        self.kind, self.delta = kind, delta
        self.accountants: dict[str, Accountant] = {}

    def record(self, client_id: str, noise_multiplier: float, rate: float, steps: int) -> None:
        acc = self.accountants.setdefault(client_id, Accountant(self.kind))
        acc.step(noise_multiplier, rate, steps)

    def max_epsilon(self) -> float:
        return self.max_epsilon_by(self.kind)[0]

    def max_epsilon_by(self, kind: AccountantName) -> tuple[float, AccountantName]:
        """The largest client ε by ``kind``, and the analysis that gave it."""
        answers = [a.epsilon_by(kind, self.delta) for a in self.accountants.values()]
        return max(answers, default=(0.0, kind), key=lambda answer: answer[0])

    def max_epsilon_after(self, plans: dict[str, Plan], ratio: float = 1.0) -> float:
        """The largest ε any client would have after one more round of its plan, with its
        multiplier times ``ratio`` (the schedule's for that round)."""
        worst = 0.0
        for cid, plan in plans.items():
            acc = self.accountants.get(cid) or Accountant(self.kind)
            z = plan.noise_multiplier * ratio
            after = acc.epsilon_after(z, plan.rate, self.delta, plan.steps)
            worst = max(worst, after)
        return worst

    def state_dict(self) -> dict[str, Any]:
        return {cid: acc.state_dict() for cid, acc in self.accountants.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.accountants = {}
        for cid, saved in state.items():
            self.accountants[cid] = Accountant(self.kind)
            self.accountants[cid].load_state_dict(saved)


class DPSGDTrainer(LocalTrainer):
    def __init__(
        self,
        config: TrainConfig,
        clip: float,
        noise_multipliers: Mapping[str, float],
        noise: NoiseSource,
        ledgers: ClientLedgers,
        secure_batches: bool = False,
        ratio_at: Callable[[int], float] | None = None,
        rates: Mapping[str, float] | None = None,
        user: LocalTrainer | None = None,
    ) -> None:
        """``user``: the trainer it replaces, whose task loss, optimizer and augmentation
        it keeps (only the batches, the per-sample clipping and the noise are DP-SGD's)."""
        if user is None:
            super().__init__(config)
        else:
            super().__init__(config, user.loss, optimizer=user.make_optimizer, augment=user.augment)
        self.clip, self.noise_multipliers = clip, dict(noise_multipliers)
        """Each client's multiplier in round 1 (the scale of the schedule)."""
        self.ratio_at = ratio_at
        """The schedule's shape: round r's multiplier over round 1's (None: constant)."""
        self.rates = dict(rates) if rates is not None else None
        """Each client's Poisson rate, set by its tier (None: B/n_k)."""
        self.noise, self.ledgers = noise, ledgers
        self.secure_batches = secure_batches
        """Poisson batches from the OS's CSPRNG instead of the client's seeded generator."""
        self.expected_batch = 1
        """B, this round's expected Poisson batch size (set as each round starts)."""

    def _round(self, n: int, ctx: FitContext | None) -> tuple[float, float, int]:
        """(z, the Poisson rate B/n, the steps) of this client's round."""
        if ctx is None:
            raise ValueError("DP-SGD accounts per client: pass the FitContext")
        z = self.noise_multipliers[ctx.client_id]
        if self.ratio_at is not None:
            z = z * self.ratio_at(ctx.round)
        rate = (
            min(self.config.batch_size or n, n) / n
            if self.rates is None
            else self.rates[ctx.client_id]
        )
        return z, rate, planned_steps(self.config, n)

    def optimizer(self, params: list[nn.Parameter], ctx: FitContext | None) -> DPOptimizer:
        """Opacus' optimizer for one client's round (the audit's canaries override this)."""
        assert ctx is not None  # ``train`` checked it
        cfg = self.config
        inner = (
            self.make_optimizer(params)
            if self.make_optimizer is not None
            else torch.optim.SGD(
                params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
            )
        )
        return KeyedNoiseDPOptimizer(
            inner,
            noise_multiplier=self._round(1, ctx)[0],
            max_grad_norm=self.clip,
            expected_batch_size=self.expected_batch,
            noise=self.noise,
            keys=(ctx.round, ctx.client_id),
        )

    def batches(self, n: int, gen: torch.Generator, ctx: FitContext | None) -> Iterator[Tensor]:
        """Poisson batches (rate B/n): each example joins each step independently."""
        _, rate, steps = self._round(n, ctx)
        draw = None if self.secure_batches else gen
        for _ in range(steps):
            yield torch.nonzero(poisson_mask(n, rate, draw)).flatten()

    @contextmanager
    def forward_model(self, model: nn.Module) -> Iterator[nn.Module]:
        """Opacus' per-sample gradients (the loss must be a mean over the batch)."""
        gsm = GradSampleModule(model, loss_reduction="mean")
        try:
            with warnings.catch_warnings():
                # the input needs no gradient, so torch warns about the per-sample hooks
                warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
                yield gsm
        finally:
            gsm._close()  # removes the hooks: the shared workspace model is left plain

    def empty_step(self, params: list[nn.Parameter]) -> bool:
        """An empty Poisson batch still takes a noise-only step."""
        for p in params:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype)  # type: ignore[attr-defined]
        return True

    def train(
        self,
        model: nn.Module,
        data: Split,
        gen: torch.Generator,
        ctx: FitContext | None = None,
    ) -> TrainResult:
        n = len(data)
        _, rate, _ = self._round(n, ctx)  # checks the context before anything trains
        self.expected_batch = max(1, round(rate * n))
        return super().train(model, data, gen, ctx)

    def finish(self, ctx: FitContext | None, n: int, steps: int) -> None:
        z, rate, planned = self._round(n, ctx)
        assert ctx is not None
        self.ledgers.record(ctx.client_id, z, rate, planned)


def _check_model(model: nn.Module) -> None:
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ConfigError(
            [
                f"privacy.mode=dpsgd: {e}. Fix: use GroupNorm instead of BatchNorm (Opacus' "
                "ModuleValidator.fix(model) does the swap) or pick another model.name"
                for e in errors
            ]
        )


def build_dpsgd(parts: Parts) -> None:
    cfg, fed = parts.config.privacy, parts.config
    _check_model(parts.model)
    sizes = [len(ix) for ix in parts.data.client_indices]
    ratios = ratios_for(cfg, fed.rounds)
    ledgers = ClientLedgers(cfg.accountant, cfg.delta)
    noise = noise_source(cfg.secure_rng, fed.seed, "dp-sgd")
    facts: dict[str, Any] = {
        "noise_multiplier": cfg.noise_multiplier,
        "clip": cfg.clip,
        "level": "sample (each client accounted on its own; max over clients)",
        **describe(cfg.accountant, ratios, cfg),
    }
    if cfg.tiers:
        _build_tiers(parts, sizes, ledgers, noise, facts)
        return
    plans = client_plans(cfg, fed.train, sizes, fed.rounds)
    multipliers = {cid: plan.noise_multiplier for cid, plan in plans.items()}

    def ratio_at(rnd: int) -> float:
        return ratios[min(max(rnd, 1), len(ratios)) - 1]

    parts.trainer = DPSGDTrainer(
        fed.train,
        cfg.clip,
        multipliers,
        noise,
        ledgers,
        cfg.secure_rng,
        ratio_at=None if len(set(ratios)) == 1 else ratio_at,
        user=parts.trainer,
    )
    parts.stateful["privacy"] = ledgers
    if cfg.noise_multiplier is None:
        facts["calibration"] = "per client: its own rate and steps, sampled every round"
        # each z_k is a function of the client's data size: a per-client statistic
        if not cfg.withholds_client_info:
            facts["noise_multipliers"] = multipliers

    def per_round(rnd: int) -> dict[str, Any]:
        line: dict[str, Any] = {"noise_ratio": ratio_at(rnd)}
        if cfg.noise_multiplier is not None:  # shared by every client
            line["noise_multiplier"] = cfg.noise_multiplier * ratio_at(rnd)
        return line

    report(parts, cfg, ledgers.max_epsilon_by, facts, per_round)
    # conservative: any client might be sampled next round
    budget_guard(parts, cfg, lambda rnd: ledgers.max_epsilon_after(plans, ratio_at(rnd)))


def _build_tiers(
    parts: Parts,
    sizes: list[int],
    ledgers: ClientLedgers,
    noise: NoiseSource,
    facts: dict[str, Any],
) -> None:
    cfg, fed = parts.config.privacy, parts.config
    plans, book, schedule, base = tier_plans(cfg, fed.train, sizes, fed.rounds, fed.seed)
    scale = schedule.at(1)
    parts.trainer = DPSGDTrainer(
        fed.train,
        cfg.clip,
        {cid: plan.noise_multiplier for cid, plan in plans.items()},
        noise,
        ledgers,
        cfg.secure_rng,
        ratio_at=None if schedule.constant else (lambda rnd: schedule.at(rnd) / scale),
        rates={cid: plan.rate for cid, plan in plans.items()},
        user=parts.trainer,
    )
    parts.sampler = TierFilter(parts.sampler, book)
    parts.stateful["privacy"] = TieredLedgers(ledgers, book)
    facts.update(tier_facts(cfg, book, base), noise_multiplier=scale)
    facts["level"] = "sample (each tier accounted as if its clients trained every round)"
    report_tiers(parts, cfg, book, schedule, facts)


class TieredLedgers:
    """The per-client ledgers and the tiers' accountants, checkpointed together."""

    def __init__(self, ledgers: ClientLedgers, book: TierBook) -> None:
        self.ledgers, self.book = ledgers, book

    def state_dict(self) -> dict[str, Any]:
        return {"clients": self.ledgers.state_dict(), "tiers": self.book.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ledgers.load_state_dict(state["clients"])
        self.book.load_state_dict(state["tiers"])
