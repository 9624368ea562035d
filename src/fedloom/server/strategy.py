"""Strategies: how updates are combined (an aggregator) and how the result is applied
(a server optimizer step). FedAvg is the weighted mean followed by SGD with lr=1.

A round, in the order the server calls a strategy (``fedloom.server.server``):

1. configure: the sampler picks the clients; ``fit_config(rnd)`` is sent to each, with
   the global weights and ``downlink_extras()``;
2. client work: each client trains and transforms its update (``fedloom.client``);
3. aggregate: ``new_aggregator(rnd)`` takes every checked update (``check_meta``) and
   gives the round's ``result()``;
4. apply: ``apply(global_state, aggregate)`` returns the next global state;
5. evaluate: the server evaluates it and writes the round's metrics and checkpoint.

Each call gets what it needs as arguments; none depends on another having run first.
Wrappers (central DP, an audit's recorder) derive from ``StrategyWrapper``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from fedloom.core.registry import REGISTRY
from fedloom.core.tensors import Tensors
from fedloom.server.aggregate import WeightedSum
from fedloom.server.config import StrategyConfig
from fedloom.server.optimizer import OptimizerFactory, ServerOptimizer
from fedloom.server.rows import Refused, UpdateRows

if TYPE_CHECKING:
    from fedloom.parts import Parts

__all__ = ["StrategyConfig"]


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

    def add_rows(self, rows: UpdateRows) -> Refused:
        """``add`` of every row, as one weighted sum (``fedloom.server.rows``)."""
        self.sum.add_rows(rows.updates, [float(m["num_examples"]) for m in rows.metas])
        return []

    def result(self) -> Tensors:
        return self.sum.mean()


class Strategy:
    """Aggregate, then apply: ``new_aggregator(rnd)`` per round and a server optimizer step."""

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

    def prepare(self, parts: Parts) -> None:
        """Assembly time, once: add the strategy's client-side pieces to ``parts`` (a
        trainer penalty, a grad hook, an update transform). FedAvg has none."""

    def fit_config(self, rnd: int) -> dict[str, Any]:
        """Extra instructions sent to every client this round (none for FedAvg)."""
        return {}

    def downlink_extras(self) -> Tensors:
        """Extra named tensors sent with the global weights (e.g. SCAFFOLD's control c)."""
        return {}

    def update_extras(self, global_state: Mapping[str, Tensor]) -> Tensors:
        """Templates (name, shape, dtype) of extra tensors every update must carry."""
        return {}

    def new_aggregator(self, rnd: int) -> Aggregator:
        """Round ``rnd``'s aggregator."""
        return self.aggregator_factory()

    def views(self, global_state: Mapping[str, Tensor]) -> dict[str, Tensors]:
        """The models the server sends, by view name: one, ``""``, the global state, unless
        the strategy keeps several (FedDF: one per architecture). The server checks each
        client's update against the shapes of its view."""
        return {"": dict(global_state)}

    def client_view(self, client_id: str) -> str:
        """The view client ``client_id`` is sent and must update (``""`` unless several)."""
        return ""

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


class StrategyWrapper(Strategy):
    """A strategy that is ``inner`` in every respect but the ones a subclass overrides: the
    base of wrappers such as central DP (which replaces the aggregator), pruning (which
    follows ``apply``) or an audit's recorder. Every phase is delegated explicitly."""

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner
        self.name = inner.name
        self.always_apply = inner.always_apply

    @property
    def meta_checks(self) -> list[MetaCheck]:  # type: ignore[override]
        return self.inner.meta_checks

    @property
    def server_optimizer(self) -> ServerOptimizer | None:  # type: ignore[override]
        return self.inner.server_optimizer

    def prepare(self, parts: Parts) -> None:
        self.inner.prepare(parts)

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

    def new_aggregator(self, rnd: int) -> Aggregator:
        return self.inner.new_aggregator(rnd)

    def views(self, global_state: Mapping[str, Tensor]) -> dict[str, Tensors]:
        return self.inner.views(global_state)

    def client_view(self, client_id: str) -> str:
        return self.inner.client_view(client_id)

    def apply(self, global_state: Mapping[str, Tensor], aggregate: Mapping[str, Tensor]) -> Tensors:
        return self.inner.apply(global_state, aggregate)

    def state_dict(self) -> tuple[Tensors, dict[str, Any]]:
        return self.inner.state_dict()

    def load_state_dict(self, tensors: Mapping[str, Tensor], rest: Mapping[str, Any]) -> None:
        self.inner.load_state_dict(tensors, rest)


VIEW_KEY = "model"
"""Fit-message meta: the view (architecture) whose weights the payload holds; absent
when the strategy keeps one global model."""


def view_meta(view: str) -> dict[str, str]:
    """The fit-message field naming ``view`` (none for the one global model)."""
    return {VIEW_KEY: view} if view else {}


def sgd(lr: float, momentum: float = 0.0) -> OptimizerFactory:
    """The server step of FedAvg (lr 1, no momentum) and FedAvgM."""
    return lambda params: torch.optim.SGD(params, lr=lr, momentum=momentum)


AggregatorFactory = Callable[[], Aggregator]


def mean_aggregator(config: StrategyConfig, params: Any = None) -> AggregatorFactory:
    """``strategy.aggregator=mean``: FedAvg's sample-weighted mean."""
    return SampleWeightedMean


def aggregator_for(config: StrategyConfig) -> AggregatorFactory:
    """The per-round aggregator factory ``strategy.aggregator`` names."""
    factory = REGISTRY.component("aggregator", config.aggregator, "strategy.aggregator").load()
    return factory(config, None)  # type: ignore[no-any-return]


def strategy_params(config: StrategyConfig) -> Any:
    """The strategy's own params model instance, or None if it declares none."""
    model = REGISTRY.component("strategy", config.name).params_model()
    return None if model is None else model.model_validate(config.params)


def build_strategy(config: StrategyConfig) -> Strategy:
    """The registered strategy ``strategy.name``, called as ``factory(config, params)``."""
    factory = REGISTRY.component("strategy", config.name, "strategy.name").load()
    strategy = factory(config, strategy_params(config))
    if not isinstance(strategy, Strategy):
        raise TypeError(
            f"strategy {config.name!r} built a {type(strategy).__name__}, not a Strategy"
        )
    return strategy
