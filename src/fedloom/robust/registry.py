"""``strategy.aggregator=<name>``: the robust rules, declared in ``fedloom.builtins``."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

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
from fedloom.server.config import StrategyConfig
from fedloom.server.strategy import AggregatorFactory

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


def _buffered(rule: Rule) -> AggregatorFactory:
    return lambda: BufferedAggregator(rule)


# ``strategy.aggregator=<name>`` (declared in fedloom.builtins): factory(config, params)


def median(c: StrategyConfig, params: Any = None) -> AggregatorFactory:
    return _buffered(lambda us, ws: coordinate_median(us))


def trimmed(c: StrategyConfig, params: Any = None) -> AggregatorFactory:
    return _buffered(lambda us, ws: trimmed_mean(us, c.trim_beta))


def krum(c: StrategyConfig, params: Any = None) -> AggregatorFactory:
    return _buffered(lambda us, ws: tolerant_krum(us, c.krum_f, 1))


def multikrum(c: StrategyConfig, params: Any = None) -> AggregatorFactory:
    return _buffered(lambda us, ws: tolerant_krum(us, c.krum_f, c.multikrum_m))


def norm_bound(c: StrategyConfig, params: Any = None) -> AggregatorFactory:
    return _buffered(lambda us, ws: norm_bounded_mean(us, ws, c.norm_bound))
