"""User-level DP-FedAvg (McMahan et al., "Learning Differentially Private Recurrent
Language Models", ICLR 2018) as a strategy wrapper around any server optimizer.

Per round: each arriving update (all trainable tensors together) is clipped to L2 norm
C; the clipped updates are summed with weight 1 each (uniform weighting: a sample-count
weight would let one client's influence, hence the sensitivity, grow without bound);
``N(0, (z·C)²)`` is added to every coordinate of the sum; the result is divided by the
*expected* number of clients ``q·N``, a constant, so the sensitivity of the average is
exactly ``C / (qN)``. The release is reported to the accountant as one step of the
sampled Gaussian mechanism with ``(z, q)``. A round in which no update arrived still
releases noise and is accounted: skipping it would reveal that nobody was sampled.

Clients clip too, before their update is compressed (``client_clip_hook``): the codec and
its error feedback then work on what will be released, and each client reports whether
its update was within the clip, the bit adaptive clipping counts (Andrew et al. 2021).
The server clips again on arrival, so the bound never rests on the clients' code.
"""

from __future__ import annotations

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
from fedloom.privacy.noise import NoiseSource
from fedloom.server.strategy import Aggregator, Strategy

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
    update_multiplier: float = field(init=False)
    """z_Δ: the multiplier of the noise on the update sum (z without adaptive clipping)."""

    def __post_init__(self) -> None:
        # a count noise too small for z is a ConfigError here, before any round runs
        self.update_multiplier = (
            self.noise_multiplier
            if self.adaptive is None
            else update_noise_multiplier(self.noise_multiplier, self.adaptive.count_std)
        )

    @property
    def current_clip(self) -> float:
        return self.adaptive.clip if self.adaptive else self.clip

    def state_dict(self) -> dict[str, Any]:
        clip = self.adaptive.state_dict() if self.adaptive else {}
        return {"accountant": self.accountant.state_dict(), "adaptive": clip}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.accountant.load_state_dict(state["accountant"])
        if self.adaptive is not None:
            self.adaptive.load_state_dict(state["adaptive"])


class DPSumAggregator:
    """Clip each update, sum uniformly; ``result()`` noises the sum, divides by qN and
    accounts the release."""

    def __init__(self, mech: CentralMechanism, rnd: int, template: Mapping[str, Tensor]) -> None:
        self.mech = mech
        self.round = rnd
        self.clip = mech.current_clip
        """Clipping bound; the noise is calibrated to ``mech.current_clip`` at creation."""
        self.noise_clip = self.clip
        self.total: Tensors = {n: torch.zeros_like(t) for n, t in template.items()}
        self.unclipped = 0
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def add(self, client_id: str, update: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
        clipped, norm = clip_update(update, self.clip)
        for name, t in clipped.items():
            self.total[name].add_(t)
        within = meta.get(WITHIN_CLIP)  # the client's own bit, measured before compression
        self.unclipped += int(within if isinstance(within, bool) else norm <= self.clip)
        self._count += 1

    def result(self) -> Tensors:
        mech = self.mech
        std = mech.update_multiplier * self.noise_clip
        out = {
            name: (t + mech.noise.normal(t.shape, std, t.dtype, self.round, name))
            / mech.expected_clients
            for name, t in self.total.items()
        }
        if mech.adaptive is not None:
            count_noise = mech.noise.normal(
                torch.Size([]), mech.adaptive.count_std, torch.float64, self.round, "count"
            )
            # each client's b − ½: sensitivity ½, whatever the number of participants
            centered = self.unclipped - self._count / 2
            mech.adaptive.step(centered + float(count_noise), mech.expected_clients)
        mech.accountant.step(mech.noise_multiplier, mech.sample_rate)
        return out


class CentralDPStrategy(Strategy):
    """Wraps a strategy: its aggregator becomes ``DPSumAggregator``; everything else
    (server optimizer, extras, state) is the wrapped strategy's."""

    always_apply = True
    """A round with no update still releases (noise only) and is accounted."""

    def __init__(self, inner: Strategy, mech: CentralMechanism) -> None:
        self.inner = inner
        self.mech = mech
        self.name = f"dp-{inner.name}"
        self.round = 0
        self.template: Tensors = {}

    def __getattr__(self, name: str) -> Any:
        # only for attributes this wrapper does not define (e.g. server_optimizer)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def start(self, global_state: Mapping[str, Tensor]) -> None:
        self.inner.start(global_state)
        extras = self.inner.update_extras(global_state)
        self.template = {n: torch.zeros_like(t) for n, t in {**global_state, **extras}.items()}

    def fit_config(self, rnd: int) -> dict[str, Any]:
        self.round = rnd  # the server asks once per round, right before new_aggregator
        return {**self.inner.fit_config(rnd), CLIP_KEY: self.mech.current_clip}

    def downlink_extras(self) -> Tensors:
        return self.inner.downlink_extras()

    def update_extras(self, global_state: Mapping[str, Tensor]) -> Tensors:
        return self.inner.update_extras(global_state)

    def new_aggregator(self) -> Aggregator:
        return DPSumAggregator(self.mech, self.round, self.template)

    def apply(self, global_state: Mapping[str, Tensor], aggregate: Mapping[str, Tensor]) -> Tensors:
        return self.inner.apply(global_state, aggregate)

    def state_dict(self) -> tuple[Tensors, dict[str, Any]]:
        return self.inner.state_dict()

    def load_state_dict(self, tensors: Mapping[str, Tensor], rest: Mapping[str, Any]) -> None:
        self.inner.load_state_dict(tensors, rest)
