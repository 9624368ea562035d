"""Robust rules on crafted inputs whose right answer is known."""

import pytest
import torch

import fedloom.features  # noqa: F401  (registers the aggregators)
from fedloom.core.errors import ConfigError
from fedloom.robust.aggregators import (
    coordinate_median,
    krum_scores,
    multi_krum,
    norm_bounded_mean,
    trimmed_mean,
)
from fedloom.server.strategy import StrategyConfig, aggregator_for


def U(*v):
    return {"w": torch.tensor(v, dtype=torch.float64)}


def test_median_ignores_one_huge_outlier():
    ups = [U(1.0, -1.0), U(2.0, 0.0), U(3.0, 1.0), U(1e9, -1e9)]
    # even count: mean of the two middle values per coordinate
    assert coordinate_median(ups)["w"].tolist() == [2.5, -0.5]
    assert coordinate_median(ups[:3])["w"].tolist() == [2.0, 0.0]


def test_trimmed_mean_cuts_both_ends_per_coordinate():
    ups = [U(v, -v) for v in (0.0, 1.0, 2.0, 3.0, 100.0)]
    # β = 0.2 of 5 -> one value cut at each end: mean(1, 2, 3) = 2
    assert trimmed_mean(ups, 0.2)["w"].tolist() == [2.0, -2.0]
    # β = 0.1 of 5 -> floor(0.5) = 0 cut: the plain mean
    assert trimmed_mean(ups, 0.1)["w"].tolist() == [21.2, -21.2]


def test_krum_picks_the_update_closest_to_its_neighbours():
    honest = [U(0.0, 0.0), U(0.1, 0.0), U(0.0, 0.1), U(0.1, 0.1)]
    ups = [*honest, U(10.0, 10.0)]
    scores = krum_scores(ups, f=1)
    # each update's n - f - 2 = 2 nearest: honest corners score 0.01 + 0.01
    assert scores[:4].tolist() == pytest.approx([0.02] * 4)
    assert scores[4].item() > 100
    assert multi_krum(ups, f=1, m=1)["w"].tolist() == [0.0, 0.0]  # ties: lowest index
    assert multi_krum(ups, f=1)["w"].tolist() == pytest.approx([0.05, 0.05])  # m = n - f = 4


def test_krum_needs_enough_updates():
    with pytest.raises(ValueError, match="2f\\+3"):
        krum_scores([U(0.0)] * 4, f=1)


def test_norm_bound_clips_each_update_then_weights():
    ups = [U(3.0, 4.0), U(0.3, 0.4)]  # norms 5 and 0.5
    out = norm_bounded_mean(ups, [1.0, 3.0], bound=1.0)
    # (0.6, 0.8)·1/4 + (0.3, 0.4)·3/4
    assert out["w"].tolist() == pytest.approx([0.375, 0.5])


@pytest.mark.parametrize(
    ("name", "expected"),
    [("median", [2.5]), ("trimmed_mean", [2.5]), ("krum", [2.5]), ("mean", None)],
)
def test_configured_aggregators(name, expected):
    cfg = StrategyConfig(aggregator=name, trim_beta=0.2, krum_f=1)
    agg = aggregator_for(cfg)()
    for v, n in ((1.0, 1), (2.0, 1), (3.0, 1), (2.5, 1), (50.0, 0.01)):
        agg.add("k", U(v), {"num_examples": n})
    if name == "mean":  # sample-weighted: (1 + 2 + 3 + 2.5 + 0.5) / 4.01
        expected = [9.0 / 4.01]
    assert agg.count == 5
    assert agg.result()["w"].tolist() == pytest.approx(expected)


def test_unregistered_aggregator_is_a_config_error():
    with pytest.raises(ConfigError, match="strategy.aggregator"):
        aggregator_for(StrategyConfig.model_construct(aggregator="nope"))  # type: ignore[arg-type]


def test_krum_and_fednova_combinations_are_refused_at_config_time():
    from fedloom.config import load_config

    with pytest.raises(ConfigError) as refused:
        load_config(None, ["clients.per_round=4", "strategy.aggregator=krum"])
    assert refused.value.problems == [
        "strategy.krum_f: Krum tolerating f=1 needs clients.per_round >= 2f+3 = 5, got 4"
    ]
    load_config(None, ["strategy.aggregator=krum"])
    with pytest.raises(ConfigError, match="strategy.name=fednova"):
        load_config(None, ["strategy.name=fednova", "strategy.aggregator=median"])


def test_krum_rounds_thinned_by_failures_still_aggregate():
    from fedloom.robust.registry import tolerant_krum

    ups = [U(0.0), U(0.1), U(0.2), U(50.0)]  # 4 < 2·1+3: f drops to 0, n-2 = 2 neighbours
    assert tolerant_krum(ups, f=1, m=1)["w"].tolist() == pytest.approx([0.1])
    assert tolerant_krum(ups[:2], f=1, m=1)["w"].tolist() == pytest.approx([0.05])  # median
