"""The built-in strategies, registered by name in ``fedloom.builtins``.

Each one is an aggregation followed by a server optimizer step on the pseudo-gradient
``-Δ``: FedProx and SCAFFOLD change what clients compute and keep FedAvg's server step
(SGD with ``server_lr``); FedNova changes the aggregation; FedAdam/FedYogi/FedAdagrad
change the step. Every class is built as ``cls(config, params)`` (the registry's strategy
contract) and can be subclassed: ``fedloom.lookup("strategy", "fedavg")`` is ``FedAvg``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fedloom.algorithms.fednova import (
    NormalizedAverage,
    normalizer_of,
    planned_normalizer_check,
    report_normalizer,
)
from fedloom.algorithms.fedprox import proximal_term
from fedloom.algorithms.optimizers import (
    FedAdagradOptimizer,
    FedAdamOptimizer,
    FedYogiOptimizer,
    ReddiOptimizer,
)
from fedloom.algorithms.scaffold import ScaffoldStrategy, control_variate_hook, drift_correction
from fedloom.client.transforms import ATTACK, CLIP, FEDNOVA, LOCAL_DP, SCAFFOLD
from fedloom.server.config import StrategyConfig
from fedloom.server.optimizer import OptimizerFactory
from fedloom.server.strategy import Strategy, aggregator_for, sgd

if TYPE_CHECKING:
    from fedloom.parts import Parts

AFTER_PRIVACY = (ATTACK, CLIP, LOCAL_DP)
"""SCAFFOLD and FedNova describe the update as clipped and noised (the codec compresses
it afterwards, error feedback included)."""


class FedAvg(Strategy):
    """McMahan et al. 2017: the sample-weighted mean, then SGD with ``server_lr``."""

    def __init__(self, config: StrategyConfig, params: Any = None) -> None:
        super().__init__(config.name, self.server_step(config), aggregator_for(config))
        self.config = config

    def server_step(self, config: StrategyConfig) -> OptimizerFactory:
        return sgd(config.server_lr)


class FedAvgM(FedAvg):
    """FedAvg with server momentum ``server_momentum`` (Hsu et al. 2019)."""

    def server_step(self, config: StrategyConfig) -> OptimizerFactory:
        return sgd(config.server_lr, config.server_momentum)


class _Adaptive(FedAvg):
    """Reddi et al. 2021: an adaptive server optimizer on the pseudo-gradient."""

    kind: type[ReddiOptimizer]

    def server_step(self, config: StrategyConfig) -> OptimizerFactory:
        kind = self.kind

        def make(params: list[nn.Parameter]) -> torch.optim.Optimizer:
            c = config
            return kind(params, lr=c.server_lr, beta1=c.beta1, beta2=c.beta2, tau=c.tau)

        return make


class FedAdam(_Adaptive):
    kind = FedAdamOptimizer


class FedYogi(_Adaptive):
    kind = FedYogiOptimizer


class FedAdagrad(_Adaptive):
    kind = FedAdagradOptimizer


class FedProx(FedAvg):
    """Li et al. 2020: FedAvg whose clients add ``mu/2 ||w - w_global||^2`` to their loss."""

    def prepare(self, parts: Parts) -> None:
        parts.trainer.penalties.append(proximal_term(self.config.mu))


class Scaffold(ScaffoldStrategy):
    """Karimireddy et al. 2020 (``fedloom.algorithms.scaffold``): a grad hook corrects
    every local step; a transform reports the control delta with the update."""

    def __init__(self, config: StrategyConfig, params: Any = None) -> None:
        super().__init__(sgd(config.server_lr), aggregator_for(config))

    def prepare(self, parts: Parts) -> None:
        from fedloom.robust.weighting import run_weighting

        train = parts.config.train
        parts.trainer.grad_hooks.append(drift_correction)
        # Δc_i is computed from the update after clipping and local noise
        hook = control_variate_hook(train.lr, train.momentum)
        parts.add_transform(SCAFFOLD, hook, after=AFTER_PRIVACY)
        # n is the total weight of all N clients under the run's weighting (see Weights)
        self.population_examples = run_weighting(parts).population(
            [str(k) for k in range(parts.config.clients.num)]
        )


class FedNova(Strategy):
    """Wang et al. 2020 (``fedloom.algorithms.fednova``): its own normalized average."""

    def __init__(self, config: StrategyConfig, params: Any = None) -> None:
        checks = [lambda cid, meta: normalizer_of(meta)]  # ``prepare`` adds the bound
        super().__init__("fednova", sgd(config.server_lr), NormalizedAverage, meta_checks=checks)

    def prepare(self, parts: Parts) -> None:
        from fedloom.robust.weighting import server_sizes

        train = parts.config.train
        parts.add_transform(FEDNOVA, report_normalizer(train.momentum), after=AFTER_PRIVACY)
        # the server bounds each a_k by the steps it planned for that client
        self.meta_checks.append(planned_normalizer_check(train, server_sizes(parts)))
