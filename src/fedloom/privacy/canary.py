"""Canary clients for the privacy audit, inserted into a real federation.

Round r has its own canary client ``canary-r`` with its own random direction u_r; its
update goes through the same client code, codec, transport and validation as every
other client's.

Central DP: a fair coin decides whether the canary takes part in round r (always
sampled when in, never otherwise); it sends ``CANARY_NORM · clip · u_r`` and runs none of
the honest clients' update hooks (their client-side clipping among them): the guarantee
must hold whatever a user sends. A white-box auditor sees each round's release and knows
the other participants' updates: ``CanaryRecorder`` wraps the DP strategy, clips and sums
the other updates as the aggregator does, and keeps ``⟨qN · release − Σ others, u_r⟩ /
clip``, the canary's share plus the noise.

Local DP: the canary takes part in every round and runs the local mechanism; the coin
decides the sign of its update, ``± CANARY_NORM · clip · u_r`` (clipped to ± clip · u_r,
two inputs at the mechanism's sensitivity 2·clip). ``ReleaseRecorder`` keeps
``⟨canary's release, u_r⟩ / clip``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from fedloom.client.client import load_into
from fedloom.client.context import FitContext, TrainResult
from fedloom.client.trainer import LocalTrainer, TrainConfig
from fedloom.core.seeding import generator
from fedloom.core.tensors import Tensors
from fedloom.data.base import Split
from fedloom.privacy.central import CentralDPStrategy, DPSumAggregator
from fedloom.privacy.clipping import clip_update
from fedloom.privacy.noise import NoiseSource
from fedloom.server.sampler import Sampler
from fedloom.server.strategy import Aggregator, Strategy, StrategyWrapper

CANARY_NORM = 10.0
"""Canary update norm in units of the clip: the server's clipping has work to do."""
CANARY_PREFIX = "canary-"


def canary_id(rnd: int) -> str:
    return f"{CANARY_PREFIX}{rnd}"


def canary_direction(template: Mapping[str, Tensor], seed: int, rnd: int) -> Tensors:
    """Round ``rnd``'s canary direction: uniform on the unit sphere, float64."""
    gen = generator(seed, "audit-canary", rnd)
    # by name: the client's decoded weights and the server's template differ in order
    raw = {
        n: torch.randn(template[n].shape, generator=gen, dtype=torch.float64)
        for n in sorted(template)
    }
    norm = math.sqrt(sum(float(t.pow(2).sum()) for t in raw.values()))
    return {n: t / norm for n, t in raw.items()}


def project(tensors: Mapping[str, Tensor], direction: Mapping[str, Tensor]) -> float:
    return sum(float((tensors[n].double() * u).sum()) for n, u in direction.items())


class CanaryTrainer(LocalTrainer):
    """Trains nothing: moves the model to ``global ± CANARY_NORM · clip · u_round``, the
    sign from ``signs[round − 1]`` (True: +; None: always +)."""

    def __init__(
        self, config: TrainConfig, clip: float, seed: int, signs: Sequence[bool] | None = None
    ) -> None:
        super().__init__(config)
        self.clip, self.seed = clip, seed
        self.signs = None if signs is None else list(signs)

    def train(
        self,
        model: nn.Module,
        data: Split,
        gen: torch.Generator,
        ctx: FitContext | None = None,
    ) -> TrainResult:
        if ctx is None:
            raise ValueError("a canary needs its fit context (round and global weights)")
        u = canary_direction(ctx.global_state, self.seed, ctx.round)
        scale = CANARY_NORM * self.clip
        if self.signs is not None and not self.signs[ctx.round - 1]:
            scale = -scale
        load_into(
            model,
            {n: (g.double() + scale * u[n]).to(g.dtype) for n, g in ctx.global_state.items()},
        )
        return TrainResult(num_examples=1, loss=0.0, steps=1)


class CanarySampler:
    """The run's sampler, plus round r's canary (index ``first + r − 1``) when its coin
    says it is in."""

    def __init__(self, inner: Sampler, first: int, coins: Sequence[bool]) -> None:
        self.inner, self.first, self.coins = inner, first, list(coins)

    @property
    def expected_per_round(self) -> float:
        return self.inner.expected_per_round

    def sample(self, rnd: int) -> list[int]:
        chosen = list(self.inner.sample(rnd))
        return [*chosen, self.first + rnd - 1] if self.coins[rnd - 1] else chosen


class IncludingSampler:
    """The run's sampler, plus client ``index`` whenever the sampler left it out."""

    def __init__(self, inner: Sampler, index: int) -> None:
        self.inner, self.index = inner, index

    @property
    def expected_per_round(self) -> float:
        return self.inner.expected_per_round

    def sample(self, rnd: int) -> list[int]:
        chosen = list(self.inner.sample(rnd))
        return chosen if self.index in chosen else [*chosen, self.index]


class ScaledNoise:
    """A noise source whose scale is ``factor`` times the one asked for: the half-noise
    (0.5) and no-noise (0) positive controls."""

    def __init__(self, inner: NoiseSource, factor: float) -> None:
        self.inner, self.factor = inner, factor

    def normal(
        self, shape: torch.Size, std: float, dtype: torch.dtype, *keys: object
    ) -> torch.Tensor:
        if self.factor == 0:
            return torch.zeros(shape, dtype=dtype)
        return self.inner.normal(shape, std * self.factor, dtype, *keys)

    def discrete_gaussian(self, shape: torch.Size, scale: float, *keys: object) -> torch.Tensor:
        if self.factor == 0:
            return torch.zeros(shape, dtype=torch.int64)
        return self.inner.discrete_gaussian(shape, scale * self.factor, *keys)


class _Recorder:
    """Feeds the DP aggregator; meanwhile sums the non-canary updates as it clips them
    and, on release, records the canary score of the round."""

    def __init__(self, inner: DPSumAggregator, owner: CanaryRecorder) -> None:
        self.inner, self.owner = inner, owner
        template = owner.dp.template
        self.others = {n: torch.zeros(t.shape, dtype=torch.float64) for n, t in template.items()}

    @property
    def count(self) -> int:
        return self.inner.count

    def add(self, client_id: str, update: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
        if not client_id.startswith(CANARY_PREFIX):
            clipped, _ = clip_update(update, self.inner.clip)
            for name, t in clipped.items():
                self.others[name].add_(t.double())
        self.inner.add(client_id, update, meta)

    def result(self) -> Tensors:
        released = self.inner.result()
        owner, rnd = self.owner, self.inner.round
        residual = {
            n: t.double() * owner.dp.mech.expected_clients - self.others[n]
            for n, t in released.items()
        }
        u = canary_direction(owner.dp.template, owner.seed, rnd)
        owner.scores[rnd] = project(residual, u) / owner.clip
        return released


class CanaryRecorder(StrategyWrapper):
    """Wraps the central DP strategy; each round's aggregator records the canary score.
    ``server_clip=False`` switches the server's clipping off (a positive control)."""

    def __init__(self, inner: CentralDPStrategy, seed: int, server_clip: bool = True) -> None:
        super().__init__(inner)
        self.dp = inner
        self.seed = seed
        self.clip = inner.mech.clip
        self.server_clip = server_clip
        self.scores: dict[int, float] = {}

    def new_aggregator(self, rnd: int) -> Aggregator:
        # the central strategy's own aggregator, typed as what it is
        aggregator = cast(DPSumAggregator, self.dp.new_aggregator(rnd))
        if not self.server_clip:
            aggregator.clip = math.inf
        return _Recorder(aggregator, self)


class _CanaryTap:
    """Hands every update to the inner aggregator; records the canary's own release."""

    def __init__(self, inner: Aggregator, owner: ReleaseRecorder, rnd: int) -> None:
        self.inner, self.owner, self.round = inner, owner, rnd

    @property
    def count(self) -> int:
        return self.inner.count

    def add(self, client_id: str, update: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
        if client_id.startswith(CANARY_PREFIX):
            owner = self.owner
            u = canary_direction(update, owner.seed, self.round)
            owner.scores[self.round] = project(update, u) / owner.clip
        self.inner.add(client_id, update, meta)

    def result(self) -> Tensors:
        return self.inner.result()


class ReleaseRecorder(StrategyWrapper):
    """Wraps any strategy; records the canary's release as it arrives (local DP)."""

    def __init__(self, inner: Strategy, seed: int, clip: float) -> None:
        super().__init__(inner)
        self.seed, self.clip = seed, clip
        self.scores: dict[int, float] = {}

    def new_aggregator(self, rnd: int) -> Aggregator:
        return _CanaryTap(self.inner.new_aggregator(rnd), self, rnd)
