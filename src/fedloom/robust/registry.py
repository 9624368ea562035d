"""``strategy.aggregator=<name>``: the robust rules, registered with the server's strategies."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from torch import Tensor

from fedloom.core.tensors import Tensors
from fedloom.robust.aggregators import (
    BufferedAggregator,
    Rule,
    coordinate_median,
    multi_krum,
    norm_bounded_mean,
    trimmed_mean,
)
from fedloom.server.strategy import AggregatorFactory, StrategyConfig, register_aggregator

log = logging.getLogger(__name__)


def tolerant_krum(updates: Sequence[Mapping[str, Tensor]], f: int, m: int | None) -> Tensors:
    """Multi-Krum that survives a round where dropouts left fewer than 2f+3 updates.

    The run was checked to sample enough clients, but failures can thin a round out; rather
    than stop the federation, tolerate the largest f that the round supports (and take the
    coordinate median below three updates), and say so in the log.
    """
    n = len(updates)
    usable = min(f, (n - 3) // 2)
    if usable != f:
        log.warning("Krum: only %d updates arrived; tolerating f=%d instead of %d", n, usable, f)
    if usable < 0:
        return coordinate_median(updates)
    return multi_krum(updates, usable, None if m is None else min(m, n))


RULES: dict[str, Callable[[StrategyConfig], Rule]] = {
    "median": lambda c: lambda us, ws: coordinate_median(us),
    "trimmed_mean": lambda c: lambda us, ws: trimmed_mean(us, c.trim_beta),
    "krum": lambda c: lambda us, ws: tolerant_krum(us, c.krum_f, 1),
    "multikrum": lambda c: lambda us, ws: tolerant_krum(us, c.krum_f, c.multikrum_m),
    "norm_bound": lambda c: lambda us, ws: norm_bounded_mean(us, ws, c.norm_bound),
}


def _factory(name: str) -> Callable[[StrategyConfig], AggregatorFactory]:
    def build(config: StrategyConfig) -> AggregatorFactory:
        rule = RULES[name](config)
        return lambda: BufferedAggregator(rule)

    return build


def register_all() -> None:
    for name in RULES:
        register_aggregator(name, _factory(name))
