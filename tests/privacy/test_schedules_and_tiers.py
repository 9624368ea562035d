"""Noise schedules and privacy tiers: shapes, calibration, and end-to-end runs whose
reported ε is recomputed independently from the logged multipliers and rates."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from opacus.accountants import RDPAccountant
from pydantic import ValidationError

from fedloom.config import load_config
from fedloom.core.errors import ConfigError
from fedloom.experiment import Experiment, RunResult, resume
from fedloom.privacy.accountant import epsilon_of
from fedloom.privacy.config import AccountantName, PrivacyConfig
from fedloom.privacy.schedule import MAX_LEVELS, quantize, round_history, shape
from fedloom.privacy.solve import calibrate_rate, calibrate_scale
from fedloom.privacy.tiers import assign_tiers

dp_accounting = pytest.importorskip("dp_accounting")

BASE = [
    "clients.num=20",
    "clients.per_round=5",
    "model.name=logreg",
    "train.lr=0.1",
    "train.local_epochs=1",
    "privacy.clip=1.0",
]
TIERS = [
    "privacy.tiers=[{epsilon: 2, fraction: 0.7}, {epsilon: 5, fraction: 0.3}]",
]


def _config(tmp: Path, *overrides: str) -> Any:
    return load_config(None, [*BASE, f"output_dir={tmp}", *overrides])


def _run(tmp: Path, *overrides: str) -> RunResult:
    return Experiment(_config(tmp, *overrides)).run()


def _pld_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    acc = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
    for sigma, q, n in history:
        event = dp_accounting.GaussianDpEvent(sigma)
        if q < 1:
            event = dp_accounting.PoissonSampledDpEvent(q, event)
        acc.compose(event, n)
    return float(acc.get_epsilon(delta))


def _rdp_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    acc = RDPAccountant()
    for sigma, q, n in history:
        for _ in range(n):
            acc.step(noise_multiplier=sigma, sample_rate=q)
    return float(acc.get_epsilon(delta))


def _tier_histories(
    metrics: list[dict[str, Any]], steps: list[int]
) -> list[list[list[tuple[float, float, int]]]]:
    """Per tier, its history after each round, from the logged multipliers and rates."""
    tiers = len(metrics[0]["sample_rate_by_tier"])
    out: list[list[list[tuple[float, float, int]]]] = [[] for _ in range(tiers)]
    for t in range(tiers):
        history: list[tuple[float, float, int]] = []
        for m in metrics:
            q = m["sample_rate_by_tier"][t]
            if q > 0:
                history = [*history, (m["noise_multiplier"], q, steps[t])]
            out[t].append(history)
    return out


# ---- shapes, quantization and calibration ------------------------------------------------


def test_schedule_shapes() -> None:
    linear = PrivacyConfig(
        mode="central", noise_multiplier=1, schedule="linear", final_noise_ratio=0.5
    )
    assert shape(linear, 5) == pytest.approx([1.0, 0.875, 0.75, 0.625, 0.5])
    cosine = linear.model_copy(update={"schedule": "cosine"})
    assert shape(cosine, 3) == pytest.approx([1.0, 0.75, 0.5])
    step = PrivacyConfig(
        mode="central", noise_multiplier=1, schedule="step", schedule_steps=((3, 0.8), (5, 0.6))
    )
    assert shape(step, 6) == [1.0, 1.0, 0.8, 0.8, 0.6, 0.6]


def test_quantize_keeps_the_ends_and_at_most_twenty_levels() -> None:
    ratios = [1 - 0.5 * r / 99 for r in range(100)]
    snapped = quantize(ratios)
    assert len(set(snapped)) == MAX_LEVELS
    assert snapped[0] == 1.0 and snapped[-1] == pytest.approx(0.5)
    assert max(abs(a - b) for a, b in zip(ratios, snapped, strict=True)) <= 0.5 / 19 / 2 + 1e-12


@pytest.mark.parametrize("kind", ["rdp", "prv"])
def test_scale_calibration_lands_in_the_window(kind: AccountantName) -> None:
    ratios = (1.0, 0.8, 0.6, 0.4)
    scale = calibrate_scale(3.0, 1e-5, 0.1, 2, ratios, kind)
    history = round_history([scale * r for r in ratios], 0.1, 2)
    reported, used = epsilon_of(kind, history, 1e-5)
    assert used == kind and 0.95 * 3.0 <= reported <= 3.0
    independent = (_rdp_epsilon if kind == "rdp" else _pld_epsilon)(history, 1e-5)
    assert independent == pytest.approx(reported, rel=0.03)


def test_rate_calibration_lands_in_the_window_or_caps_at_one() -> None:
    multipliers = (1.5, 1.2, 1.0)
    rate = calibrate_rate(2.0, 1e-5, multipliers, 1, "rdp")
    eps = _rdp_epsilon(round_history(list(multipliers), rate, 1), 1e-5)
    assert 0 < rate < 1 and 0.95 * 2.0 <= eps <= 2.0
    assert calibrate_rate(50.0, 1e-5, multipliers, 1, "rdp") == 1.0


def test_seeded_tier_assignment() -> None:
    cfg = PrivacyConfig(
        mode="central",
        tiers=({"epsilon": 1, "fraction": 0.7}, {"epsilon": 8, "fraction": 0.3}),  # type: ignore[arg-type]
    )
    tiers = assign_tiers(cfg.tiers, 10, seed=3)
    assert tiers == assign_tiers(cfg.tiers, 10, seed=3) and tiers.count(1) == 3
    assert tiers != assign_tiers(cfg.tiers, 10, seed=4)
    listed = PrivacyConfig(
        mode="central",
        noise_multiplier=1,
        tiers=({"epsilon": 1, "clients": (0, 2)}, {"epsilon": 8, "clients": (1,)}),  # type: ignore[arg-type]
    )
    assert assign_tiers(listed.tiers, 3, 0) == (0, 1, 0)
    with pytest.raises(ConfigError, match="clients 3 are in no tier"):
        assign_tiers(listed.tiers, 4, 0)


@pytest.mark.parametrize(
    ("privacy", "message"),
    [
        ({"tiers": [{"epsilon": 1, "fraction": 1.0}], "target_epsilon": 1}, "drop privacy.target"),
        ({"noise_multiplier": 1, "schedule": "step"}, "needs privacy.schedule_steps"),
        ({"noise_multiplier": 1, "final_noise_ratio": 0.5}, "only used by schedule=linear"),
        ({"tiers": [{"epsilon": 1, "fraction": 0.5}]}, "sum to 1"),
        ({"tiers": [{"epsilon": 1}]}, "exactly one of fraction or clients"),
    ],
)
def test_config_errors(privacy: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PrivacyConfig(mode="central", **privacy)


# ---- end-to-end ----------------------------------------------------------------------------


@pytest.mark.slow
def test_central_schedule_and_tiers_match_pld_per_tier_and_round(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        "rounds=4",
        "privacy.mode=central",
        "privacy.schedule=cosine",
        "privacy.final_noise_ratio=0.5",
        *TIERS,
    )
    metrics = result.metrics
    zs = [m["noise_multiplier"] for m in metrics]
    assert zs[-1] == pytest.approx(0.5 * zs[0]) and zs == sorted(zs, reverse=True)
    for t, histories in enumerate(_tier_histories(metrics, [1, 1])):
        for m, history in zip(metrics, histories, strict=True):
            assert m["epsilon_by_tier"][t] == pytest.approx(_pld_epsilon(history, 1e-5), rel=0.03)
    for m in metrics:
        assert m["epsilon"] == max(m["epsilon_by_tier"])
    final = metrics[-1]["epsilon_by_tier"]
    assert 0.95 * 2 <= final[0] <= 2 and 0.95 * 5 <= final[1] <= 5  # calibrated
    rates = metrics[-1]["sample_rate_by_tier"]
    assert rates[0] == 0.25 and 0.25 < rates[1] < 1  # strictest at per_round / num
    tiers = result.summary["privacy"]["tiers"]
    assert [t["clients"] for t in tiers] == [14, 6]


@pytest.mark.slow
def test_central_rdp_schedule_matches_opacus_rdp(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        "rounds=4",
        "privacy.mode=central",
        "privacy.accountant=rdp",
        "privacy.schedule=linear",
        "privacy.final_noise_ratio=0.4",
        "privacy.target_epsilon=4",
    )
    history: list[tuple[float, float, int]] = []
    for m in result.metrics:
        history.append((m["noise_multiplier"], 0.25, 1))
        assert m["epsilon"] == pytest.approx(_rdp_epsilon(history, 1e-5), rel=0.03)
    assert 0.95 * 4 <= result.metrics[-1]["epsilon"] <= 4


@pytest.mark.slow
def test_dpsgd_tiers_match_pld(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        "rounds=3",
        "privacy.mode=dpsgd",
        "train.batch_size=16",
        "train.lr=1.0",
        "train.momentum=0",
        "privacy.schedule=linear",
        "privacy.final_noise_ratio=0.6",
        *TIERS,
    )
    steps = [t["steps_per_round"] for t in result.summary["privacy"]["tiers"]]
    for t, histories in enumerate(_tier_histories(result.metrics, steps)):
        for m, history in zip(result.metrics, histories, strict=True):
            assert m["epsilon_by_tier"][t] == pytest.approx(_pld_epsilon(history, 1e-5), rel=0.03)
    final = result.metrics[-1]["epsilon_by_tier"]
    assert 0.95 * 2 <= final[0] <= 2 and 0.95 * 5 <= final[1] <= 5
    assert result.metrics[-1]["epsilon"] == max(final)


@pytest.mark.slow
def test_local_tiers_per_client_epsilon_matches_rdp(tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        "rounds=4",
        "privacy.mode=local",
        "privacy.accountant=rdp",
        "privacy.noise_multiplier=3",
        "privacy.schedule=step",
        "privacy.schedule_steps=[[3, 0.7]]",
        "privacy.tiers=[{epsilon: 1.5, clients: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]},"
        " {epsilon: 30, clients: [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]}]",
    )
    exp = Experiment(cfg)
    result = exp.run()
    ledger = exp.stateful["privacy"]
    by_tier = [0.0, 0.0]
    for cid in ledger.releases:  # type: ignore[attr-defined]
        eps = _rdp_epsilon(ledger.history(cid), 1e-5)  # type: ignore[attr-defined]
        tier = 0 if int(cid) < 10 else 1
        by_tier[tier] = max(by_tier[tier], eps)
        assert eps <= (1.5, 30)[tier]
    final = result.metrics[-1]
    assert final["epsilon_by_tier"] == pytest.approx(by_tier, rel=0.03)
    assert final["sample_rate_by_tier"][1] == 1.0 and final["sample_rate_by_tier"][0] < 1.0
    assert [m["noise_multiplier"] for m in result.metrics] == pytest.approx([3, 3, 2.1, 2.1])


@pytest.mark.slow
def test_spent_tier_is_no_longer_sampled_and_the_run_goes_on(tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        "rounds=5",
        "privacy.mode=central",
        "privacy.accountant=rdp",
        "privacy.noise_multiplier=1.5",
        "privacy.max_epsilon=3",
        "privacy.tiers=[{epsilon: 2, fraction: 0.5}, {epsilon: 20, fraction: 0.5}]",
    )
    exp = Experiment(cfg)
    result = exp.run()
    assert result.summary["rounds"] == 5 and result.summary["stopped_early"] is None
    rates = [m["sample_rate_by_tier"][1] for m in result.metrics]
    spent = rates.index(0.0)
    assert spent > 0 and all(q == 0.0 for q in rates[spent:])
    eps = [m["epsilon_by_tier"][1] for m in result.metrics]
    assert eps[-1] == eps[spent - 1] <= 3  # max_epsilon caps the loose tier
    assert all(m["sample_rate_by_tier"][0] > 0 for m in result.metrics)
    book = exp.parts.sampler  # the tiered sampler: nobody of tier 1 in a later round
    tier_of = exp.stateful["privacy"].tiers.tier_of  # type: ignore[attr-defined]
    for rnd in range(6, 12):
        assert all(tier_of[k] == 0 for k in book.sample(rnd))


@pytest.mark.slow
def test_resume_continues_schedule_and_tiers_exactly(tmp_path: Path) -> None:
    args = (
        "rounds=4",
        "privacy.mode=central",
        "privacy.accountant=rdp",
        "privacy.schedule=linear",
        "privacy.final_noise_ratio=0.5",
        *TIERS,
    )
    whole = _run(tmp_path / "whole", *args)

    class Killed(Exception):
        pass

    def kill_after_two(metrics: dict[str, Any]) -> None:
        if metrics["round"] == 2:
            raise Killed

    with pytest.raises(Killed):
        Experiment(_config(tmp_path / "part", *args)).run(kill_after_two)
    resumed = resume(tmp_path / "part").run()
    keys = ("noise_multiplier", "epsilon", "epsilon_by_tier", "sample_rate_by_tier", "num_clients")
    assert [{k: m[k] for k in keys} for m in resumed.metrics] == [
        {k: m[k] for k in keys} for m in whole.metrics
    ]
    for a, b in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="calibrated the noise"):
        resume(tmp_path / "part", ["rounds=6"])


def test_no_client_ids_in_tier_facts(tmp_path: Path) -> None:
    cfg = _config(
        tmp_path, "rounds=1", "privacy.mode=central", "privacy.noise_multiplier=1", *TIERS
    )
    exp = Experiment(cfg)
    tiers = exp.parts.notes["privacy"]["tiers"]
    assert all(
        set(t) == {"epsilon", "clients", "sample_rate", "steps_per_round", "capped"} for t in tiers
    )
    assert not math.isnan(tiers[0]["sample_rate"])


@pytest.mark.slow
def test_dpsgd_schedule_without_tiers_matches_rdp_per_client(tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        "rounds=3",
        "clients.num=4",
        "clients.per_round=4",
        "privacy.mode=dpsgd",
        "privacy.accountant=rdp",
        "train.batch_size=32",
        "privacy.noise_multiplier=2",
        "privacy.schedule=step",
        "privacy.schedule_steps=[[2, 0.75], [3, 0.5]]",
    )
    exp = Experiment(cfg)
    result = exp.run()
    zs = [m["noise_multiplier"] for m in result.metrics]
    assert zs == [2.0, 1.5, 1.0]
    sizes = {len(ix) for ix in exp.parts.data.client_indices}
    for r, m in enumerate(result.metrics, start=1):
        worst = 0.0
        for n in sizes:  # every client trains every round here
            steps = math.ceil(n / 32)
            history = [(z, 32 / n, steps) for z in zs[:r]]
            worst = max(worst, _rdp_epsilon(history, 1e-5))
        assert m["epsilon"] == pytest.approx(worst, rel=0.03)


def test_privacy_plots(tmp_path: Path) -> None:
    from fedloom.privacy.plots import plot_privacy

    metrics = [
        {
            "round": r,
            "epsilon": 0.5 * r,
            "delta": 1e-5,
            "test_accuracy": 0.1 * r,
            "epsilon_by_tier": [0.2 * r, 0.5 * r],
        }
        for r in (1, 2, 3)
    ]
    written = plot_privacy(metrics, tmp_path, budgets=[1.0, 2.0])
    assert [p.name for p in written] == ["epsilon.png", "accuracy_vs_epsilon.png"]
    assert all(p.stat().st_size > 1000 for p in written)
    assert plot_privacy([{"round": 1, "epsilon": None}], tmp_path / "none") == []
