"""Strategies: how updates are combined (an aggregator) and how the result is applied
(a server optimizer step). FedAvg is the weighted mean followed by SGD with lr=1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from fedloom.core.tensors import Tensors
from fedloom.server.aggregate import WeightedSum
from fedloom.server.optimizer import OptimizerFactory, ServerOptimizer

StrategyName = Literal["fedavg", "fedavgm"]


class StrategyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: StrategyName = "fedavg"
    server_lr: float = Field(1.0, gt=0)
    """Server learning rate on the pseudo-gradient (1.0 is plain FedAvg)."""
    server_momentum: float = Field(0.9, ge=0, lt=1)
    """Server momentum, used by ``fedavgm``."""


class Aggregator(Protocol):
    @property
    def count(self) -> int:
        """Updates added so far."""
        ...

    def add(
        self, client_id: str, update: Mapping[str, Tensor], meta: Mapping[str, Any]
    ) -> None: ...

    def result(self) -> Tensors: ...


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

    def __init__(
        self,
        name: str,
        optimizer: OptimizerFactory,
        aggregator: Callable[[], Aggregator] = SampleWeightedMean,
    ) -> None:
        self.name = name
        self.optimizer_factory = optimizer
        self.aggregator_factory = aggregator
        self.server_optimizer: ServerOptimizer | None = None

    def start(self, global_state: Mapping[str, Tensor]) -> None:
        self.server_optimizer = ServerOptimizer(global_state, self.optimizer_factory)

    def fit_config(self, rnd: int) -> dict[str, Any]:
        """Extra instructions sent to every client this round (none for FedAvg)."""
        return {}

    def new_aggregator(self) -> Aggregator:
        return self.aggregator_factory()

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


def _sgd(lr: float, momentum: float = 0.0) -> OptimizerFactory:
    return lambda params: torch.optim.SGD(params, lr=lr, momentum=momentum)


_STRATEGIES: dict[str, Callable[[StrategyConfig], Strategy]] = {
    "fedavg": lambda c: Strategy("fedavg", _sgd(c.server_lr)),
    "fedavgm": lambda c: Strategy("fedavgm", _sgd(c.server_lr, c.server_momentum)),
}


def build_strategy(config: StrategyConfig) -> Strategy:
    return _STRATEGIES[config.name](config)
