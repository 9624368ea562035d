"""User-level DP-FedAvg (McMahan et al., "Learning Differentially Private Recurrent
Language Models", ICLR 2018) as a strategy wrapper around any server optimizer.

Per round: each arriving update (all trainable tensors together) is clipped to L2 norm
C and mapped to integers on a grid of step γ (``fedloom.privacy.grid``: nearest rounding,
L2 norm at most C/γ + √d/2); the integer vectors are summed in int64 with weight 1 each
(uniform weighting: a sample-count weight would let one client's influence, hence the
sensitivity, grow without bound); integer discrete Gaussian noise N_Z(0, (z·Δ/γ)²), with
Δ = C + γ√d/2 the inflated sensitivity, is added to every coordinate; the result is
mapped back to floats (times γ) and divided by the *expected* number of clients ``q·N``,
a constant. The release is reported to the accountant as one step of the sampled
Gaussian mechanism with ``(z, q)``, z = σ/Δ (docs/privacy.md: why that bound holds for
the discrete Gaussian). A round in which no update arrived still
releases noise and is accounted: skipping it would reveal that nobody was sampled.

Clients clip too, before their update is compressed (``client_clip_hook``): the codec and
its error feedback then work on what will be released, and each client reports whether
its update was within the clip, the bit adaptive clipping counts (Andrew et al. 2021).
The server clips again on arrival, so the bound never rests on the clients' code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from fedloom.client.context import FitContext, UpdateHook
from fedloom.core.tensors import Tensors
from fedloom.privacy.accountant import Accountant
from fedloom.privacy.adaptive import AdaptiveClip, update_noise_multiplier
from fedloom.privacy.clipping import clip_update
from fedloom.privacy.grid import (
    MIN_GRID_NOISE,
    check_range,
    from_grid,
    grid_step,
    magnitude,
    rounding_slack,
    to_grid,
)
from fedloom.privacy.noise import NoiseSource
from fedloom.privacy.schedule import NoiseSchedule
from fedloom.privacy.tiers import TierBook
from fedloom.server.strategy import Aggregator, Strategy, StrategyWrapper

CLIP_KEY = "dp_clip"
"""Round meta: the clip the server will apply this round."""
WITHIN_CLIP = "dp_within_clip"
"""Reply meta: whether the client's update norm was at most that clip."""


def client_clip_hook() -> UpdateHook:
    """Clip the update to the round's clip on the client, before it is compressed."""

    def hook(update: Tensors, ctx: FitContext) -> Tensors:
        clip = ctx.config.get(CLIP_KEY)
        if not isinstance(clip, (int, float)) or not clip > 0:
            return update  # no clip announced: the server's clipping alone bounds it
        clipped, norm = clip_update(update, float(clip))
        ctx.meta[WITHIN_CLIP] = bool(norm <= clip)
        return clipped

    return hook


@dataclass
class CentralMechanism:
    """The Gaussian mechanism's parameters and its accountant."""

    clip: float
    noise_multiplier: float
    """z: the multiplier the accountant is told (covers the adaptive count too)."""
    sample_rate: float
    expected_clients: float
    accountant: Accountant
    noise: NoiseSource
    adaptive: AdaptiveClip | None = None
    granularity: float | None = None
    """γ, the grid step (``privacy.granularity``); None: ``grid_step``'s default per round."""
    schedule: NoiseSchedule | None = None
    """Each round's z (``privacy.schedule``); None: ``noise_multiplier`` in every round."""
    tiers: TierBook | None = None
    """Per-tier rates and accountants (``privacy.tiers``); None: one rate, ``accountant``."""
    update_multiplier: float = field(init=False)
    """z_Δ: the multiplier of the noise on the update sum (z without adaptive clipping)."""

    def __post_init__(self) -> None:
        # a count noise too small for any round's z is a ConfigError here, before round 1
        for z in self.schedule.multipliers if self.schedule else ():
            self._update_multiplier(z)
        self.update_multiplier = self._update_multiplier(self.noise_multiplier)
        self.grid_step(self.clip, 1)  # an explicit granularity too coarse fails here

    def _update_multiplier(self, z: float) -> float:
        if self.adaptive is None:
            return z
        return update_noise_multiplier(z, self.adaptive.count_std)

    def begin_round(self, rnd: int) -> None:
        """Set round ``rnd``'s multiplier and, with tiers, its expected number of clients."""
        if self.schedule is not None:
            self.noise_multiplier = self.schedule.at(rnd)
            self.update_multiplier = self._update_multiplier(self.noise_multiplier)
        if self.tiers is not None:
            self.expected_clients = self.tiers.expected_clients(rnd)

    def account(self, rnd: int) -> None:
        """Record round ``rnd``'s release."""
        if self.tiers is not None:
            self.tiers.record(rnd)
        else:
            self.accountant.step(self.noise_multiplier, self.sample_rate)

    def grid_step(self, clip: float, dim: int) -> float:
        """γ for this round's clip and the model's ``dim`` coordinates."""
        return grid_step(clip, dim, self.update_multiplier * clip, self.granularity)

    @property
    def current_clip(self) -> float:
        return self.adaptive.clip if self.adaptive else self.clip

    def state_dict(self) -> dict[str, Any]:
        clip = self.adaptive.state_dict() if self.adaptive else {}
        state = {"accountant": self.accountant.state_dict(), "adaptive": clip}
        if self.tiers is not None:
            state["tiers"] = self.tiers.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.accountant.load_state_dict(state["accountant"])
        if self.tiers is not None:
            self.tiers.load_state_dict(state["tiers"])
        if self.adaptive is not None:
            self.adaptive.load_state_dict(state["adaptive"])


class DPSumAggregator:
    """Clip each update, map it to the integer grid and sum uniformly; ``result()`` adds
    discrete Gaussian noise to the sum, maps it back, divides by qN and accounts it."""

    def __init__(self, mech: CentralMechanism, rnd: int, template: Mapping[str, Tensor]) -> None:
        self.mech = mech
        self.round = rnd
        self.clip = mech.current_clip
        """Clipping bound; the noise is calibrated to ``mech.current_clip`` at creation."""
        self.noise_clip = self.clip
        self.dim = sum(t.numel() for t in template.values())
        self.step = mech.grid_step(self.clip, self.dim)
        """γ: one grid unit, in the update's units."""
        self.dtypes = {n: t.dtype for n, t in template.items()}
        self.total: Tensors = {
            n: torch.zeros(t.shape, dtype=torch.int64) for n, t in template.items()
        }
        self.unclipped = 0
        self._count = 0
        self._magnitude = 0

    @property
    def count(self) -> int:
        return self._count

    @property
    def sensitivity(self) -> float:
        """Δ: the clip plus the grid's worst-case rounding, C + γ√d/2."""
        return self.noise_clip + rounding_slack(self.step, self.dim)

    @property
    def noise_scale(self) -> float:
        """The discrete Gaussian's scale in grid units: z_Δ·Δ/γ."""
        return self.mech.update_multiplier * self.sensitivity / self.step

    def add(self, client_id: str, update: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
        clipped, norm = clip_update(update, self.clip)
        ints = to_grid(clipped, self.clip, self.step)
        self._magnitude += magnitude(ints)
        check_range(self._magnitude, self.noise_scale)
        for name, k in ints.items():
            self.total[name].add_(k)
        within = meta.get(WITHIN_CLIP)  # the client's own bit, measured before compression
        self.unclipped += int(within if isinstance(within, bool) else norm <= self.clip)
        self._count += 1

    def result(self) -> Tensors:
        mech = self.mech
        scale = self.noise_scale
        noised = {
            name: k + mech.noise.discrete_gaussian(k.shape, scale, self.round, name)
            for name, k in self.total.items()
        }
        out = from_grid(noised, self.step, mech.expected_clients, self.dtypes)
        if mech.adaptive is not None:
            mech.adaptive.step(self._noised_count(mech.adaptive.count_std), mech.expected_clients)
        mech.account(self.round)
        return out

    def _noised_count(self, count_std: float) -> float:
        """Σ(b − ½) plus noise of std ``count_std``, drawn on integers: each client's b − ½
        has sensitivity ½, so m·(2·unclipped − count) is an integer of sensitivity m, noised
        with scale m·2σ_b; m, a power of two, puts ≥ MIN_GRID_NOISE grid steps in a std."""
        fine = (
            1
            if count_std <= 0
            else 2 ** max(0, math.ceil(math.log2(MIN_GRID_NOISE / (2 * count_std))))
        )
        doubled = fine * (2 * self.unclipped - self._count)
        noise = self.mech.noise.discrete_gaussian(
            torch.Size([]), fine * 2 * count_std, self.round, "count"
        )
        return (doubled + int(noise)) / (2 * fine)


class CentralDPStrategy(StrategyWrapper):
    """Wraps a strategy: its aggregator becomes ``DPSumAggregator``; everything else
    (server optimizer, extras, state) is the wrapped strategy's."""

    def __init__(self, inner: Strategy, mech: CentralMechanism) -> None:
        super().__init__(inner)
        self.mech = mech
        self.name = f"dp-{inner.name}"
        self.always_apply = True
        """A round with no update still releases (noise only) and is accounted."""
        self.template: Tensors = {}

    def start(self, global_state: Mapping[str, Tensor]) -> None:
        self.inner.start(global_state)
        extras = self.inner.update_extras(global_state)
        self.template = {n: torch.zeros_like(t) for n, t in {**global_state, **extras}.items()}

    def fit_config(self, rnd: int) -> dict[str, Any]:
        self.mech.begin_round(rnd)
        return {**self.inner.fit_config(rnd), CLIP_KEY: self.mech.current_clip}

    def new_aggregator(self, rnd: int) -> Aggregator:
        self.mech.begin_round(rnd)
        return DPSumAggregator(self.mech, rnd, self.template)
