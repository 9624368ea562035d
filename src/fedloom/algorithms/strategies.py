"""Register the strategies of this package with the server's strategy registry.

Each one is an aggregation followed by a server optimizer step on the pseudo-gradient ``-Δ``:
FedProx and SCAFFOLD change what clients compute and keep FedAvg's server step (SGD with
``server_lr``); FedNova changes the aggregation; FedAdam/FedYogi/FedAdagrad change the step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fedloom.algorithms.fednova import NormalizedAverage, normalizer_of
from fedloom.algorithms.optimizers import (
    FedAdagradOptimizer,
    FedAdamOptimizer,
    FedYogiOptimizer,
    ReddiOptimizer,
)
from fedloom.algorithms.scaffold import ScaffoldStrategy
from fedloom.core.errors import ConfigError
from fedloom.server.optimizer import OptimizerFactory
from fedloom.server.strategy import (
    Strategy,
    StrategyConfig,
    aggregator_for,
    register_strategy,
)


def sgd(c: StrategyConfig) -> OptimizerFactory:
    return lambda params: torch.optim.SGD(params, lr=c.server_lr)


def adaptive(kind: type[ReddiOptimizer]) -> Callable[[StrategyConfig], OptimizerFactory]:
    def build(c: StrategyConfig) -> OptimizerFactory:
        def make(params: list[nn.Parameter]) -> torch.optim.Optimizer:
            return kind(params, lr=c.server_lr, beta1=c.beta1, beta2=c.beta2, tau=c.tau)

        return make

    return build


def fednova(c: StrategyConfig) -> Strategy:
    if c.aggregator != "mean":
        raise ConfigError(
            [f"strategy.aggregator: fednova is its own (normalized) average, not {c.aggregator!r}"]
        )
    checks = [lambda cid, meta: normalizer_of(meta)]  # the algorithms feature adds a bound
    return Strategy("fednova", sgd(c), NormalizedAverage, meta_checks=checks)


ADAPTIVE: dict[str, type[ReddiOptimizer]] = {
    "fedadam": FedAdamOptimizer,
    "fedyogi": FedYogiOptimizer,
    "fedadagrad": FedAdagradOptimizer,
}


def adaptive_strategy(name: str) -> Callable[[StrategyConfig], Strategy]:
    def build(c: StrategyConfig) -> Strategy:
        return Strategy(name, adaptive(ADAPTIVE[name])(c), aggregator_for(c))

    return build


def register_all() -> None:
    for name in ADAPTIVE:
        register_strategy(name, adaptive_strategy(name))
    register_strategy("fedprox", lambda c: Strategy("fedprox", sgd(c), aggregator_for(c)))
    register_strategy("fednova", fednova)
    register_strategy("scaffold", lambda c: ScaffoldStrategy(sgd(c), aggregator_for(c)))
