"""End-to-end DP runs on scikit-learn's digits (small: logreg, 20 clients)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedloom.config import load_config
from fedloom.core.errors import ConfigError
from fedloom.experiment import Experiment, RunResult, resume
from fedloom.privacy.accountant import Accountant
from fedloom.privacy.sampler import PoissonSampler

BASE = [
    "clients.num=20",
    "clients.per_round=10",
    "model.name=logreg",
    "train.lr=0.1",
    "train.local_epochs=2",
    "privacy.clip=1.0",
]


def _run(tmp: Path, *overrides: str) -> RunResult:
    cfg = load_config(None, [*BASE, f"output_dir={tmp}", *overrides])
    return Experiment(cfg).run()


@pytest.mark.slow
def test_central_dp_learns_and_reports_calibrated_epsilon(tmp_path: Path) -> None:
    # every client each round (q = 1) keeps the calibration cheap; Poisson rates below 1
    # are covered by the other runs
    result = _run(
        tmp_path,
        "rounds=4",
        "clients.per_round=20",
        "privacy.mode=central",
        "privacy.target_epsilon=8",
    )
    eps = [m["epsilon"] for m in result.metrics]
    assert all(m["delta"] == 1e-5 for m in result.metrics)
    assert eps == sorted(eps) and eps[0] > 0
    assert 0.99 * 8 <= eps[-1] <= 8  # calibrated for the 4 planned rounds
    privacy = result.summary["privacy"]
    assert privacy["epsilon"] == eps[-1] and privacy["sample_rate"] == 1.0
    acc = Accountant()
    acc.step(privacy["noise_multiplier"], 1.0, 4)
    assert acc.epsilon(1e-5) == pytest.approx(eps[-1])
    # measured 0.86 (chance 0.10, no DP 0.92 on this split); user-level DP over 20 users
    assert result.summary["final_test_accuracy"] > 0.7
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["epsilon"] == eps[-1]


@pytest.mark.slow
def test_budget_stop_before_the_round_that_would_exceed(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        "rounds=10",
        "privacy.mode=central",
        "privacy.noise_multiplier=1.0",
        "privacy.max_epsilon=5",
        "train.local_epochs=1",
    )
    acc = Accountant()
    allowed = 0
    while acc.epsilon_after(1.0, 0.5, 1e-5) <= 5:
        acc.step(1.0, 0.5)
        allowed += 1
    assert 0 < allowed < 10
    assert result.summary["rounds"] == allowed
    assert result.metrics[-1]["epsilon"] <= 5
    stop = result.summary["stopped_early"]
    assert f"round {allowed + 1}" in stop and "privacy.max_epsilon=5" in stop


@pytest.mark.slow
def test_epsilon_and_model_continue_across_resume(tmp_path: Path) -> None:
    args = ("privacy.mode=central", "privacy.noise_multiplier=1.0", "train.local_epochs=1")
    whole = _run(tmp_path / "whole", "rounds=4", *args)
    _run(tmp_path / "part", "rounds=2", *args)
    resumed = resume(tmp_path / "part", ["rounds=4"]).run()
    assert [m["epsilon"] for m in resumed.metrics] == [m["epsilon"] for m in whole.metrics]
    for a, b in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def _seed_with_empty_first_round() -> int:
    return next(s for s in range(100) if not PoissonSampler(20, 0.05, s).sample(1))


@pytest.mark.slow
def test_empty_poisson_round_still_releases_noise_and_is_accounted(tmp_path: Path) -> None:
    seed = _seed_with_empty_first_round()
    cfg = load_config(
        None,
        [
            *BASE,
            f"output_dir={tmp_path}",
            f"seed={seed}",
            "rounds=1",
            "clients.per_round=1",
            "privacy.mode=central",
            "privacy.noise_multiplier=1.0",
        ],
    )
    exp = Experiment(cfg)
    before = {n: t.clone() for n, t in exp.server.global_state.items()}
    result = exp.run()
    assert result.metrics[0]["num_clients"] == 0
    assert any(not torch.equal(before[n], t) for n, t in exp.server.global_state.items())
    assert exp.stateful["privacy"].accountant.steps == 1  # type: ignore[attr-defined]


@pytest.mark.slow
def test_local_dp_noises_each_update_and_reports_per_client_epsilon(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            *BASE,
            f"output_dir={tmp_path}",
            "rounds=3",
            "train.local_epochs=1",
            "privacy.mode=local",
            "privacy.noise_multiplier=0.1",
        ],
    )
    exp = Experiment(cfg)
    result = exp.run()
    assert result.summary["privacy"]["sensitivity"] == 2.0
    counts = exp.stateful["privacy"].counts  # type: ignore[attr-defined]
    assert sum(counts.values()) == sum(m["num_clients"] for m in result.metrics)
    acc = Accountant()
    acc.step(0.1, 1.0, max(counts.values()))  # no amplification: the server sees each release
    assert result.metrics[-1]["epsilon"] == pytest.approx(acc.epsilon(1e-5))
    assert result.summary["final_test_accuracy"] > 0.3


def test_central_rejects_aggregators_it_would_replace() -> None:
    overrides = [*BASE, "privacy.mode=central", "privacy.noise_multiplier=1"]
    with pytest.raises(ConfigError, match="strategy.aggregator=median"):
        load_config(None, [*overrides, "strategy.aggregator=median"])


def test_config_needs_exactly_one_noise_source() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        load_config(None, ["privacy.mode=central"])
    with pytest.raises(ConfigError, match="adaptive_clip"):
        load_config(
            None, ["privacy.mode=local", "privacy.noise_multiplier=1", "privacy.adaptive_clip=true"]
        )


def test_secure_rng_and_adaptive_clip_are_wired(tmp_path: Path) -> None:
    from fedloom.privacy.central import CentralDPStrategy
    from fedloom.privacy.noise import SecureNoise

    cfg = load_config(
        None,
        [
            *BASE,
            f"output_dir={tmp_path}",
            "privacy.mode=central",
            "privacy.noise_multiplier=1.0",
            "privacy.secure_rng=true",
            "privacy.adaptive_clip=true",
            "privacy.count_noise_multiplier=1.0",
        ],
    )
    strategy = Experiment(cfg).parts.strategy
    assert isinstance(strategy, CentralDPStrategy)
    assert isinstance(strategy.mech.noise, SecureNoise)
    assert strategy.mech.update_multiplier == pytest.approx(2 / 3**0.5)
    assert strategy.server_optimizer is not None  # the wrapped strategy's, delegated
    too_small = cfg.model_copy(
        update={"privacy": cfg.privacy.model_copy(update={"noise_multiplier": 4.0})}
    )
    with pytest.raises(ConfigError, match="count_noise_multiplier"):
        Experiment(too_small)


class _Crash(Exception):
    pass


def _crash_after(rnd: int):  # type: ignore[no-untyped-def]
    def hook(metrics: dict[str, object]) -> None:
        if metrics["round"] == rnd:  # after round rnd's checkpoint was written
            raise _Crash

    return hook


@pytest.mark.slow
def test_crash_and_resume_keeps_epsilon_and_adaptive_clip(tmp_path: Path) -> None:
    args = [
        *BASE,
        "rounds=4",
        "train.local_epochs=1",
        "privacy.mode=central",
        "privacy.noise_multiplier=1.0",
        "privacy.adaptive_clip=true",
        "privacy.count_noise_multiplier=1.0",
    ]
    whole = Experiment(load_config(None, [*args, f"output_dir={tmp_path / 'whole'}"]))
    reference = whole.run()
    crashed = Experiment(load_config(None, [*args, f"output_dir={tmp_path / 'crash'}"]))
    with pytest.raises(_Crash):
        crashed.run(on_round=_crash_after(2))
    restored = resume(tmp_path / "crash")
    assert restored.server.round == 2
    assert restored.stateful["privacy"].accountant.steps == 2  # type: ignore[attr-defined]
    result = restored.run()
    assert [m["epsilon"] for m in result.metrics] == [m["epsilon"] for m in reference.metrics]
    clip = whole.stateful["privacy"].adaptive.clip  # type: ignore[attr-defined]
    assert restored.stateful["privacy"].adaptive.clip == clip != 1.0  # type: ignore[attr-defined]
    for a, b in zip(reference.model.parameters(), result.model.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("mode", ["local", "dpsgd"])
def test_client_side_accounting_is_refused_over_the_network(mode: str) -> None:
    overrides = [*BASE, f"privacy.mode={mode}", "privacy.noise_multiplier=1", "network.mode=grpc"]
    with pytest.raises(ConfigError, match="not supported over the network"):
        load_config(None, overrides)


def test_local_dp_keeps_the_data_size_and_loss_on_the_device(tmp_path: Path) -> None:
    result = _run(tmp_path, "rounds=1", "privacy.mode=local", "privacy.noise_multiplier=0.5")
    assert result.metrics[0]["train_loss"] == 0.0  # what the server was told
    assert result.metrics[0]["num_clients"] > 0
