"""Sample-level DP-SGD inside each client's local training, through Opacus.

Per step: a Poisson-sampled minibatch (each local example with probability q = B/n_k,
the sampling Opacus' accountant assumes), per-sample gradients from Opacus'
``GradSampleModule``, each clipped to ``privacy.clip`` and summed, Gaussian noise
``N(0, (z·clip)²)`` added by Opacus' ``DPOptimizer`` (our subclass only chooses where
the noise comes from: a generator keyed by (round, client, step) or the OS's CSPRNG),
then divided by the expected batch size B. Each client keeps its own accountant
history; the metrics report the largest ε over clients.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from opacus.validators import ModuleValidator
from torch import nn
from torch.nn import functional as F

from fedloom.client.context import FitContext, TrainResult
from fedloom.client.trainer import LocalTrainer, TrainConfig, planned_steps
from fedloom.core.errors import ConfigError
from fedloom.data.base import TensorData
from fedloom.parts import Parts
from fedloom.privacy.accountant import Accountant
from fedloom.privacy.budget import budget_guard, report
from fedloom.privacy.config import AccountantName
from fedloom.privacy.modes import noise_multiplier_for, refuse_over_network
from fedloom.privacy.noise import NoiseSource, noise_source


class _KeyedNoiseDPOptimizer(DPOptimizer):
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


class ClientLedgers:
    """Each client's accountant history (checkpointed); ε is read from it when asked."""

    def __init__(self, kind: AccountantName, delta: float) -> None:
        self.kind, self.delta = kind, delta
        self.accountants: dict[str, Accountant] = {}

    def record(self, client_id: str, noise_multiplier: float, rate: float, steps: int) -> None:
        acc = self.accountants.setdefault(client_id, Accountant(self.kind))
        acc.step(noise_multiplier, rate, steps)

    def max_epsilon(self) -> float:
        return max((a.epsilon(self.delta) for a in self.accountants.values()), default=0.0)

    def max_epsilon_after(
        self, noise_multiplier: float, plans: dict[str, tuple[float, int]]
    ) -> float:
        """The largest ε any client would have after one more round of ``(rate, steps)``."""
        worst = 0.0
        for cid, (rate, steps) in plans.items():
            acc = self.accountants.get(cid) or Accountant(self.kind)
            worst = max(worst, acc.epsilon_after(noise_multiplier, rate, self.delta, steps))
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
        noise_multiplier: float,
        noise: NoiseSource,
        ledgers: ClientLedgers,
    ) -> None:
        super().__init__(config)
        self.clip, self.noise_multiplier = clip, noise_multiplier
        self.noise, self.ledgers = noise, ledgers

    def train(
        self,
        model: nn.Module,
        data: TensorData,
        gen: torch.Generator,
        ctx: FitContext | None = None,
    ) -> TrainResult:
        if ctx is None:
            raise ValueError("DP-SGD accounts per client: pass the FitContext")
        cfg, n = self.config, len(data)
        batch = min(cfg.batch_size or n, n)
        rate, steps = batch / n, planned_steps(cfg, n)
        gsm = GradSampleModule(model, loss_reduction="mean")
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = _KeyedNoiseDPOptimizer(
            torch.optim.SGD(
                params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
            ),
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.clip,
            expected_batch_size=batch,
            noise=self.noise,
            keys=(ctx.round, ctx.client_id),
        )
        model.train()
        loss_sum, seen = 0.0, 0
        try:
            with warnings.catch_warnings():
                # the input needs no gradient, so torch warns about the per-sample hooks; harmless
                warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
                for _ in range(steps):
                    idx = torch.nonzero(torch.rand(n, generator=gen) < rate).flatten()
                    optimizer.zero_grad(set_to_none=True)
                    loss = F.cross_entropy(gsm(data.x[idx]), data.y[idx]) if len(idx) else None
                    if loss is None:  # an empty Poisson batch still takes a noise-only step
                        for p in params:
                            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype)  # type: ignore[attr-defined]
                    else:
                        loss.backward()
                        loss_sum, seen = loss_sum + loss.item() * len(idx), seen + len(idx)
                    optimizer.step()
        finally:
            gsm._close()  # removes the hooks: the shared workspace model is left plain
        self.ledgers.record(ctx.client_id, self.noise_multiplier, rate, steps)
        return TrainResult(num_examples=n, loss=loss_sum / max(seen, 1), steps=steps)


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
    refuse_over_network(parts)
    cfg, fed = parts.config.privacy, parts.config
    if fed.strategy.name in ("fedprox", "scaffold", "fednova"):
        raise ConfigError(
            [f"privacy.mode=dpsgd does not support strategy.name={fed.strategy.name}"]
        )
    _check_model(parts.model)
    # each client's (Poisson rate, steps) per round; the worst of each bounds every client
    plans = {
        str(k): (min(fed.train.batch_size or n, n) / n, planned_steps(fed.train, n))
        for k, n in enumerate(len(ix) for ix in parts.data.client_indices)
    }
    worst_rate = max(rate for rate, _ in plans.values())
    worst_steps = max(steps for _, steps in plans.values()) * fed.rounds
    z = noise_multiplier_for(cfg, worst_rate, worst_steps)  # a client in every round
    ledgers = ClientLedgers(cfg.accountant, cfg.delta)
    noise = noise_source(cfg.secure_rng, fed.seed, "dp-sgd")
    parts.trainer = DPSGDTrainer(fed.train, cfg.clip, z, noise, ledgers)
    parts.stateful["privacy"] = ledgers
    report(
        parts,
        cfg,
        ledgers.max_epsilon,
        {"noise_multiplier": z, "clip": cfg.clip, "level": "sample (max over clients)"},
    )
    # conservative: any client might be sampled next round
    budget_guard(parts, cfg, lambda rnd: ledgers.max_epsilon_after(z, plans))
