"""The ``algorithms`` feature: the client side of FedProx, SCAFFOLD and FedNova, and the
checks that need the whole config. Importing this module registers the strategies.
"""

from __future__ import annotations

from collections.abc import Callable

from fedloom.algorithms.fednova import planned_normalizer_check, report_normalizer
from fedloom.algorithms.fedprox import proximal_term
from fedloom.algorithms.scaffold import ScaffoldStrategy, control_variate_hook, drift_correction
from fedloom.algorithms.strategies import register_all
from fedloom.config import FedConfig
from fedloom.core.errors import ConfigError
from fedloom.parts import Parts
from fedloom.robust.weighting import run_weighting, server_sizes

register_all()


def _fedprox(parts: Parts) -> None:
    parts.trainer.penalties.append(proximal_term(parts.config.strategy.mu))


def _scaffold(parts: Parts) -> None:
    train = parts.config.train
    parts.trainer.grad_hooks.append(drift_correction)
    # appended last, after privacy and compression: Δc_i is computed from the update the
    # server will actually apply, and those hooks never see the aux tensors
    parts.client_hooks.append(control_variate_hook(train.lr, train.momentum))
    if isinstance(parts.strategy, ScaffoldStrategy):  # assembly time, never in the round loop
        # n is the total weight of all N clients under the run's weighting (see Weights)
        parts.strategy.population_examples = run_weighting(parts).population(
            [str(k) for k in range(parts.config.clients.num)]
        )


def _fednova(parts: Parts) -> None:
    if parts.config.network.client_weights == "claimed":
        # a_k is bounded by the steps planned for the client's size; with claimed sizes
        # that bound would rest on the client's own claim, and τ_eff scales every update
        raise ConfigError(
            [
                "strategy.name=fednova cannot be combined with network.client_weights=claimed "
                "(the step bound would trust the client's claim); use client_weights=server "
                "or network.client_sizes_file"
            ]
        )
    parts.client_hooks.append(report_normalizer(parts.config.train.momentum))
    # the server bounds each a_k by the steps it planned for that client
    check = planned_normalizer_check(parts.config.train, server_sizes(parts))
    parts.strategy.meta_checks.append(check)


CLIENT_SIDE: dict[str, Callable[[Parts], None]] = {
    "fedprox": _fedprox,
    "scaffold": _scaffold,
    "fednova": _fednova,
}


def check_aggregator(cfg: FedConfig) -> list[str]:
    """Problems a robust aggregator has with this many clients per round."""
    s, n = cfg.strategy, cfg.clients.per_round
    problems = []
    if s.aggregator in ("krum", "multikrum") and n < 2 * s.krum_f + 3:
        problems.append(
            f"strategy.krum_f: Krum tolerating f={s.krum_f} needs clients.per_round >= "
            f"2f+3 = {2 * s.krum_f + 3}, got {n}"
        )
    if s.aggregator == "multikrum" and s.multikrum_m is not None and s.multikrum_m > n:
        problems.append(f"strategy.multikrum_m ({s.multikrum_m}) exceeds clients.per_round ({n})")
    return problems


def check_local_steps(cfg: FedConfig) -> list[str]:
    """SCAFFOLD and FedNova derive each client's step normalizer from plain (momentum) SGD
    steps; weight decay adds a term to every step that the normalizer would miss."""
    if cfg.strategy.name in ("scaffold", "fednova") and cfg.train.weight_decay > 0:
        return [
            f"train.weight_decay: strategy.name={cfg.strategy.name} normalizes by the local "
            "step count of plain SGD; set train.weight_decay=0"
        ]
    return []


def apply_algorithms(parts: Parts) -> None:
    problems = check_aggregator(parts.config) + check_local_steps(parts.config)
    if problems:
        raise ConfigError(problems)
    setup = CLIENT_SIDE.get(parts.config.strategy.name)
    if setup is not None:
        setup(parts)
