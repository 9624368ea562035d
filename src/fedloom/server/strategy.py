"""Strategies: how updates are combined (an aggregator) and how the result is applied
(a server optimizer step). FedAvg is the weighted mean followed by SGD with lr=1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from fedloom.core.registry import Registry
from fedloom.core.tensors import Tensors
from fedloom.server.aggregate import WeightedSum
from fedloom.server.optimizer import OptimizerFactory, ServerOptimizer

StrategyName = Literal[
    "fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad", "fedprox", "scaffold", "fednova"
]
AggregatorName = Literal["mean", "median", "trimmed_mean", "krum", "multikrum", "norm_bound"]


class StrategyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrategyName = "fedavg"
    server_lr: float = Field(1.0, gt=0)
    """Server learning rate on the pseudo-gradient (1.0 is plain FedAvg)."""
    server_momentum: float = Field(0.9, ge=0, lt=1)
    """Server momentum, used by ``fedavgm``."""
    beta1: float = Field(0.9, ge=0, lt=1)
    """First-moment decay of ``fedadam``/``fedyogi``/``fedadagrad`` (Reddi et al. 2021)."""
    beta2: float = Field(0.99, ge=0, lt=1)
    """Second-moment decay of ``fedadam``/``fedyogi``."""
    tau: float = Field(1e-3, gt=0)
    """Adaptivity: added to sqrt(v) in the adaptive server optimizers."""
    mu: float = Field(0.01, ge=0)
    """FedProx proximal weight: each client minimises loss + mu/2 ||w - w_global||^2."""
    aggregator: AggregatorName = "mean"
    """How updates are combined: the weighted mean, or a robust rule (holds every update)."""
    trim_beta: float = Field(0.1, ge=0, lt=0.5)
    """``trimmed_mean``: fraction of updates cut at each end, per coordinate."""
    krum_f: int = Field(1, ge=0)
    """``krum``/``multikrum``: number of Byzantine clients tolerated."""
    multikrum_m: int | None = Field(None, ge=1)
    """``multikrum``: updates averaged (default: n - f)."""
    norm_bound: float = Field(1.0, gt=0)
    """``norm_bound``: each update's L2 norm is clipped to this before averaging."""


class Aggregator(Protocol):
    @property
    def count(self) -> int:
        """Updates added so far."""
        ...

    def add(
        self, client_id: str, update: Mapping[str, Tensor], meta: Mapping[str, Any]
    ) -> None: ...

    def result(self) -> Tensors: ...


MetaCheck = Callable[[str, Mapping[str, Any]], object]
"""(client id, reply meta): raises ``UpdateRejected`` when a field the strategy reads is
unusable for that client."""


class SampleWeightedMean:
    """FedAvg's aggregator: each update weighted by the client's number of examples."""

    def __init__(self) -> None:
        self.sum = WeightedSum()

    @property
    def count(self) -> int:
        return self.sum.count

    def add(self, client_id: str, update: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
        self.sum.add(update, float(meta["num_examples"]))

    def result(self) -> Tensors:
        return self.sum.mean()


class Strategy:
    """Aggregate, then apply: ``new_aggregator()`` per round and a server optimizer step."""

    always_apply = False
    """Apply even a round with no valid update (DP: an empty round still releases noise)."""

    def __init__(
        self,
        name: str,
        optimizer: OptimizerFactory,
        aggregator: Callable[[], Aggregator] = SampleWeightedMean,
        meta_checks: Sequence[MetaCheck] = (),
    ) -> None:
        self.name = name
        self.optimizer_factory = optimizer
        self.aggregator_factory = aggregator
        self.meta_checks = list(meta_checks)
        """Checks of the reply meta fields this strategy's aggregator reads (beyond
        ``num_examples``, which the server checks), run as each reply arrives."""
        self.server_optimizer: ServerOptimizer | None = None

    def start(self, global_state: Mapping[str, Tensor]) -> None:
        self.server_optimizer = ServerOptimizer(global_state, self.optimizer_factory)

    def fit_config(self, rnd: int) -> dict[str, Any]:
        """Extra instructions sent to every client this round (none for FedAvg)."""
        return {}

    def downlink_extras(self) -> Tensors:
        """Extra named tensors sent with the global weights (e.g. SCAFFOLD's control c)."""
        return {}

    def update_extras(self, global_state: Mapping[str, Tensor]) -> Tensors:
        """Templates (name, shape, dtype) of extra tensors every update must carry."""
        return {}

    def new_aggregator(self) -> Aggregator:
        return self.aggregator_factory()

    def check_meta(self, client_id: str, meta: Mapping[str, Any]) -> None:
        """``UpdateRejected`` if a meta field this strategy reads is unusable."""
        for check in self.meta_checks:
            check(client_id, meta)

    @property
    def _optimizer(self) -> ServerOptimizer:
        if self.server_optimizer is None:
            raise RuntimeError("Strategy.start(global_state) must be called first")
        return self.server_optimizer

    def apply(self, global_state: Mapping[str, Tensor], aggregate: Mapping[str, Tensor]) -> Tensors:
        return self._optimizer.step(global_state, aggregate)

    def state_dict(self) -> tuple[Tensors, dict[str, Any]]:
        return self._optimizer.state_dict()

    def load_state_dict(self, tensors: Mapping[str, Tensor], rest: Mapping[str, Any]) -> None:
        self._optimizer.load_state_dict(tensors, rest)


class DelegatingStrategy(Strategy):
    """A strategy that is ``inner`` in every respect but the ones a subclass overrides: the
    base of wrappers such as central DP (which replaces the aggregator) or an audit's
    recorder. Attributes it does not define (e.g. ``server_optimizer``) are ``inner``'s."""

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner
        self.name = inner.name
        self.always_apply = inner.always_apply

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def start(self, global_state: Mapping[str, Tensor]) -> None:
        self.inner.start(global_state)

    def fit_config(self, rnd: int) -> dict[str, Any]:
        return self.inner.fit_config(rnd)

    def downlink_extras(self) -> Tensors:
        return self.inner.downlink_extras()

    def update_extras(self, global_state: Mapping[str, Tensor]) -> Tensors:
        return self.inner.update_extras(global_state)

    def check_meta(self, client_id: str, meta: Mapping[str, Any]) -> None:
        self.inner.check_meta(client_id, meta)

    def new_aggregator(self) -> Aggregator:
        return self.inner.new_aggregator()

    def apply(self, global_state: Mapping[str, Tensor], aggregate: Mapping[str, Tensor]) -> Tensors:
        return self.inner.apply(global_state, aggregate)

    def state_dict(self) -> tuple[Tensors, dict[str, Any]]:
        return self.inner.state_dict()

    def load_state_dict(self, tensors: Mapping[str, Tensor], rest: Mapping[str, Any]) -> None:
        self.inner.load_state_dict(tensors, rest)


def _sgd(lr: float, momentum: float = 0.0) -> OptimizerFactory:
    return lambda params: torch.optim.SGD(params, lr=lr, momentum=momentum)


AggregatorFactory = Callable[[], Aggregator]

_AGGREGATORS: Registry[Callable[[StrategyConfig], AggregatorFactory]] = Registry(
    "strategy.aggregator", {"mean": lambda c: SampleWeightedMean}
)


def register_aggregator(name: str, build: Callable[[StrategyConfig], AggregatorFactory]) -> None:
    """Make ``strategy.aggregator=<name>`` use ``build(config)`` as the per-round factory."""
    _AGGREGATORS.register(name, build)


def aggregator_for(config: StrategyConfig) -> AggregatorFactory:
    return _AGGREGATORS.get(config.aggregator)(config)


_STRATEGIES: Registry[Callable[[StrategyConfig], Strategy]] = Registry(
    "strategy.name",
    {
        "fedavg": lambda c: Strategy("fedavg", _sgd(c.server_lr), aggregator_for(c)),
        "fedavgm": lambda c: Strategy(
            "fedavgm", _sgd(c.server_lr, c.server_momentum), aggregator_for(c)
        ),
    },
)


def register_strategy(name: str, factory: Callable[[StrategyConfig], Strategy]) -> None:
    """Make ``strategy.name=<name>`` build ``factory(config)`` (packages register on import)."""
    _STRATEGIES.register(name, factory)


def build_strategy(config: StrategyConfig) -> Strategy:
    return _STRATEGIES.get(config.name)(config)
