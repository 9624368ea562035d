"""The discrete Gaussian on the fixed-point grid: samplers, grid, mechanism, accounting."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.optimize import brentq

from fedloom.client.context import FitContext
from fedloom.config import load_config
from fedloom.core.errors import ConfigError, FedloomError
from fedloom.experiment import Experiment, resume
from fedloom.privacy import discrete
from fedloom.privacy.accountant import Accountant
from fedloom.privacy.central import CentralMechanism, DPSumAggregator
from fedloom.privacy.discrete import (
    discrete_gaussian_pmf,
    discrete_gaussian_variance,
    opendp_available,
    seeded_discrete_gaussian,
)
from fedloom.privacy.grid import MIN_GRID_NOISE, check_range, grid_step, rounding_slack, to_grid
from fedloom.privacy.local import ParticipationLedger, local_dp_hook
from fedloom.privacy.noise import SecureNoise, SeededNoise, noise_source

needs_opendp = pytest.mark.skipif(
    not opendp_available(), reason="opendp is not installed (pip install 'fedloom[privacy]')"
)


def _chi_square_p(draws: np.ndarray, scale: float) -> float:
    """Goodness of fit of ``draws`` to N_Z(0, scale²); tail bins merged to ≥ 20 expected."""
    k, p = discrete_gaussian_pmf(scale)
    expected = p * draws.size
    keep = expected >= 20
    lo, hi = k[keep][0], k[keep][-1]
    counts = np.bincount(np.clip(draws, lo - 1, hi + 1) - (lo - 1), minlength=hi - lo + 3)
    exp = np.concatenate([[p[k < lo].sum()], p[keep], [p[k > hi].sum()]]) * draws.size
    return float(stats.chisquare(counts, exp).pvalue)


@pytest.mark.parametrize("scale", [0.6, 3.0, 40.0])
def test_seeded_sampler_matches_the_discrete_gaussian(scale: float) -> None:
    n = 200_000
    draws = seeded_discrete_gaussian(np.random.default_rng(11), n, scale)
    assert draws.dtype == np.int64
    variance = discrete_gaussian_variance(scale)
    assert abs(draws.mean()) < 5 * math.sqrt(variance / n)
    # the variance of a sample variance is about 2σ⁴/n: 5 standard errors
    assert draws.var() == pytest.approx(variance, rel=5 * math.sqrt(2 / n))
    assert _chi_square_p(draws, scale) > 1e-4


def test_exact_variance_is_just_below_scale_squared() -> None:
    assert discrete_gaussian_variance(0.6) == pytest.approx(0.3516, abs=1e-4)  # below 0.36
    assert discrete_gaussian_variance(1.0) == pytest.approx(1 - 2.1e-7, abs=1e-8)
    assert 0 <= 9.0 - discrete_gaussian_variance(3.0) < 1e-12


def test_seeded_draws_are_reproducible_and_keyed() -> None:
    noise = SeededNoise(5, "dp-central")
    a = noise.discrete_gaussian(torch.Size([3, 1000]), 7.5, 2, "w")
    assert a.dtype == torch.int64 and a.shape == (3, 1000)
    assert torch.equal(a, SeededNoise(5, "dp-central").discrete_gaussian(a.shape, 7.5, 2, "w"))
    assert not torch.equal(a, noise.discrete_gaussian(a.shape, 7.5, 3, "w"))
    assert not torch.equal(a, SeededNoise(6, "dp-central").discrete_gaussian(a.shape, 7.5, 2, "w"))
    assert torch.equal(noise.discrete_gaussian(a.shape, 0.0, 1), torch.zeros(3, 1000).long())


@needs_opendp
def test_secure_draws_come_from_opendp_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    import opendp.prelude as dp

    built: list[Any] = []
    original = discrete._opendp_measurement.__wrapped__

    def spy(scale: float) -> Any:
        measurement = original(scale)
        built.append(measurement)
        return measurement

    monkeypatch.setattr(discrete, "_opendp_measurement", spy)
    monkeypatch.setattr(discrete, "OPENDP_CHUNK", 1000)
    source = noise_source(True, 0, "dp-central")
    assert isinstance(source, SecureNoise)
    x = source.discrete_gaussian(torch.Size([2, 1250]), 12.0, 1, "w")
    assert x.dtype == torch.int64 and x.shape == (2, 1250)
    assert len(built) == 1 and isinstance(built[0], dp.Measurement)
    # OpenDP's own description of what it built: the Gaussian on 64-bit integer vectors
    assert "i64" in str(built[0].input_domain) and "ZeroConcentratedDivergence" in str(
        built[0].output_measure
    )
    assert built[0].map(1) == pytest.approx(1 / (2 * 12.0**2))  # ρ = Δ²/(2σ²)
    assert not torch.equal(x, source.discrete_gaussian(torch.Size([2, 1250]), 12.0, 1, "w"))


@needs_opendp
def test_opendp_and_seeded_samplers_agree() -> None:
    scale, n = 6.0, 100_000
    secure = SecureNoise().discrete_gaussian(torch.Size([n]), scale).numpy()
    seeded = seeded_discrete_gaussian(np.random.default_rng(3), n, scale)
    variance = discrete_gaussian_variance(scale)
    assert secure.var() == pytest.approx(variance, rel=5 * math.sqrt(2 / n))
    assert abs(secure.mean()) < 5 * math.sqrt(variance / n)
    assert _chi_square_p(secure, scale) > 1e-5
    bins = np.arange(-18, 20)  # ±3σ, tails in the end bins (≥ 100 expected in each bin)
    table = np.stack([np.histogram(np.clip(x, -18, 18), bins)[0] for x in (secure, seeded)])
    assert stats.chi2_contingency(table).pvalue > 1e-5
    assert stats.ks_2samp(secure, seeded).pvalue > 1e-5


def test_grid_round_trip_and_sensitivity_inflation() -> None:
    step = 2.0**-8
    on_grid = {"a": torch.tensor([3.0, -0.5]) * step * 8, "b": torch.tensor([[1.0]]) * step}
    ints = to_grid(on_grid, 1.0, step)
    assert ints["a"].tolist() == [24, -4] and ints["b"].tolist() == [[1]]
    # the worst case: every coordinate just below a half-step, all rounded up
    d, clip = 400, 1.0
    fine = 2.0**-9
    value = clip / math.sqrt(d)  # 0.05 = 25.6 steps of 2^-9: each rounds up by 0.4 step
    update = {"w": torch.full((d,), value, dtype=torch.float64)}
    rounded = to_grid(update, clip, fine)["w"].double()
    norm = float(rounded.norm()) * fine
    assert norm <= clip + rounding_slack(fine, d)  # C + γ√d/2 = 1.0195
    assert norm == pytest.approx(clip + 0.4 * fine * math.sqrt(d), rel=1e-9)  # 1.0156
    # a float32 clip that lands a hair outside the ball is projected back before rounding
    tiny = {"w": torch.tensor([1.0 + 1e-7, 0.0])}
    assert to_grid(tiny, 1.0, 2.0**-20)["w"].tolist() == [2**20, 0]


def test_default_step_and_refusals() -> None:
    # γ√d/2 ≤ clip/100, σ ≥ 1024γ, a power of two
    assert grid_step(1.0, 10_000, 1.0, None) == 2.0**-13  # 2e-4 bound -> 1.22e-4
    assert grid_step(1.0, 4, 0.01, None) == 2.0**-17  # the noise bound binds: 9.8e-6
    assert grid_step(1.0, 4, 0.0, None) == 2.0**-7  # no noise: rounding alone
    assert grid_step(1.0, 4, 1.0, 2.0**-10) == 2.0**-10  # exactly 1024 steps per σ
    with pytest.raises(ConfigError, match="privacy.granularity=0.001 is too coarse"):
        grid_step(1.0, 4, 1.0, 0.001)
    with pytest.raises(ConfigError, match="too coarse"):
        CentralMechanism(1.0, 1.0, 0.1, 5.0, Accountant(), SeededNoise(0, "t"), granularity=0.5)
    with pytest.raises(FedloomError, match="overflow int64"):
        check_range(2**62 - 10, 1.0)
    with pytest.raises(ConfigError, match="only used by privacy.mode=central or local"):
        load_config(
            None, ["privacy.mode=dpsgd", "privacy.noise_multiplier=1", "privacy.granularity=0.1"]
        )


def _mechanism(z: float, clip: float, **kw: Any) -> CentralMechanism:
    return CentralMechanism(clip, z, 0.25, 4.0, Accountant(), SeededNoise(1, "dp-central"), **kw)


def test_released_noise_is_integer_multiples_of_the_step() -> None:
    mech = _mechanism(1.2, 0.5)
    template = {
        "w": torch.zeros(3000, dtype=torch.float64),
        "b": torch.zeros(7, dtype=torch.float64),
    }
    agg = DPSumAggregator(mech, 3, template)
    gen = torch.Generator().manual_seed(0)
    updates = [
        {n: torch.randn(t.shape, generator=gen, dtype=torch.float64) for n, t in template.items()}
        for _ in range(3)
    ]
    for i, u in enumerate(updates):
        agg.add(str(i), u, {})
    step = agg.step
    assert step == 2.0**-13  # rounding: 0.01/√3007 = 1.8e-4 (noise: 0.6/1024 = 5.9e-4)
    exact = sum(to_grid(u, 0.5, step)["w"] for u in updates)
    out = agg.result()
    grid_units = out["w"] * mech.expected_clients / step  # exact in float64: power-of-two step
    assert torch.equal(grid_units, grid_units.round())
    noise = grid_units.long() - exact
    assert noise.double().std().item() == pytest.approx(agg.noise_scale, rel=0.05)
    assert agg.noise_scale == pytest.approx(1.2 * (0.5 + step * math.sqrt(3007) / 2) / step)
    assert mech.accountant.history == [(1.2, 0.25, 1)]  # z = σ/Δ with the inflated Δ


def test_seeded_release_is_bit_identical_for_a_fresh_source() -> None:
    # a resumed run rebuilds its noise source from the seed: same round, same noise
    template = {"w": torch.zeros(500)}
    update = {"w": torch.linspace(-1, 1, 500)}

    def release() -> torch.Tensor:
        agg = DPSumAggregator(_mechanism(1.0, 1.0), 7, template)
        agg.add("0", update, {})
        return agg.result()["w"]

    assert torch.equal(release(), release())


def test_local_hook_noises_on_the_grid() -> None:
    ledger = ParticipationLedger(2.0, "rdp")
    hook = local_dp_hook(0.5, 2.0, SeededNoise(0, "dp-local"), ledger)
    update = {"w": torch.ones(10_000, dtype=torch.float64)}
    out = hook(update, FitContext("c", 1, {}, {}, {}, 0))["w"]
    step = grid_step(0.5, 10_000, 2.0 * 2 * 0.5, None)
    assert step == 2.0**-14
    units = out / step
    assert torch.equal(units, units.round())
    clipped = to_grid({"w": torch.full((10_000,), 0.005, dtype=torch.float64)}, 0.5, step)["w"]
    noise = units.long() - clipped
    sensitivity = 2 * 0.5 + step * math.sqrt(10_000)  # 2C + γ√d
    assert noise.double().std().item() * step == pytest.approx(2.0 * sensitivity, rel=0.03)
    assert ledger.counts == {"c": 1}


def test_rdp_accountant_is_below_the_discrete_gaussians_zcdp_bound() -> None:
    # q = 1: the multivariate discrete Gaussian at integer shifts has Rényi divergence at
    # most α·Δ²/(2σ²) (CKS 2020), i.e. ρ-zCDP with ρ = 1/(2z²) per release; ρ-zCDP gives
    # (ρ + 2√(ρ log(1/δ)), δ)-DP (Bun and Steinke 2016, Prop. 1.3)
    z, rounds, delta = 2.0, 10, 1e-5
    acc = Accountant("rdp")
    acc.step(z, 1.0, rounds)
    rho = rounds / (2 * z**2)
    by_hand = rho + 2 * math.sqrt(rho * math.log(1 / delta))  # 8.84
    eps = acc.epsilon(delta)
    assert eps <= by_hand
    assert eps == pytest.approx(8.08, abs=0.01)  # Opacus' RDP-to-DP conversion
    # and dp-accounting's RDP accountant on the same zCDP curve gives the same ε
    import dp_accounting

    rdp = dp_accounting.rdp.RdpAccountant()
    rdp.compose(dp_accounting.ZCDpEvent(rho))
    assert rdp.get_epsilon(delta) == pytest.approx(eps, rel=0.02)
    # PRV is numerically exact for the continuous Gaussian: ε of √T/z-GDP, solved by hand
    mu = math.sqrt(rounds) / z

    def gap(e: float) -> float:
        return stats.norm.cdf(-e / mu + mu / 2) - math.exp(e) * stats.norm.cdf(-e / mu - mu / 2)

    exact = brentq(lambda e: gap(e) - delta, 0.01, 50)
    prv = Accountant("prv")
    prv.step(z, 1.0, rounds)
    assert exact <= prv.epsilon(delta) <= exact + 0.02


def _delta_of(p: np.ndarray, q: np.ndarray, eps: float) -> float:
    return float(np.maximum(p - math.exp(eps) * q, 0).sum())


def test_discrete_privacy_curve_matches_continuous_on_a_fine_grid() -> None:
    # the (ε, δ) curve of one discrete Gaussian release (exact, by summation) against the
    # continuous one at the same z: lattice effects vanish once σ/γ ≥ MIN_GRID_NOISE
    def ratios(scale: float, shift: int) -> list[float]:
        k, p = discrete_gaussian_pmf(scale)
        shifted = np.exp(-((k - shift).astype(np.float64) ** 2) / (2 * scale**2))
        q = shifted / shifted.sum()
        mu = shift / scale
        out = []
        for eps in (0.1, 0.5, 1.0, 2.0, 4.0):
            cont = stats.norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * stats.norm.cdf(
                -eps / mu - mu / 2
            )
            out.append(_delta_of(p, q, eps) / cont)
        return out

    coarse = ratios(1.0, 1)  # σ = Δ = one grid step: the discrete one is worse
    assert max(coarse) > 1.1
    fine = ratios(MIN_GRID_NOISE, 1024)  # z = 1 at the grid's minimum noise
    assert max(abs(r - 1) for r in fine) < 1e-5


def test_central_run_resumes_bit_identically(tmp_path: Path) -> None:
    args = [
        "clients.num=8",
        "clients.per_round=4",
        "model.name=logreg",
        "train.local_epochs=1",
        "privacy.mode=central",
        "privacy.noise_multiplier=1.0",
        "privacy.granularity=0.0001",
    ]

    def run(out: Path, rounds: int) -> Any:
        cfg = load_config(None, [*args, f"output_dir={out}", f"rounds={rounds}"])
        return Experiment(cfg).run()

    whole = run(tmp_path / "whole", 3)
    run(tmp_path / "part", 1)
    resumed = resume(tmp_path / "part", ["rounds=3"]).run()
    assert [m["epsilon"] for m in resumed.metrics] == [m["epsilon"] for m in whole.metrics]
    for a, b in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_secure_mode_without_opendp_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discrete, "opendp_available", lambda: False)
    for mode in ("central", "local"):
        cfg = load_config(
            None,
            [
                f"output_dir={tmp_path / mode}",
                "model.name=logreg",
                f"privacy.mode={mode}",
                "privacy.noise_multiplier=1.0",
                "privacy.secure_rng=true",
            ],
        )
        with pytest.raises(ConfigError, match="privacy.secure_rng=true draws discrete Gaussian"):
            Experiment(cfg)


def test_adaptive_count_noise_is_on_a_fine_integer_grid() -> None:
    from fedloom.privacy.adaptive import AdaptiveClip

    adaptive = AdaptiveClip(1.0, quantile=0.5, lr=0.2, count_std=0.75)
    mech = _mechanism(1.0, 1.0, adaptive=adaptive)
    draws = []
    for rnd in range(1, 2001):
        agg = DPSumAggregator(mech, rnd, {"w": torch.zeros(1)})
        for i, inside in enumerate([True, True, False]):
            agg.add(str(i), {"w": torch.tensor([0.5 if inside else 5.0])}, {})
        draws.append(agg._noised_count(0.75))
    values = np.array(draws)
    # m = 1024 (2σ_b·m = 1536 ≥ 1024): every draw is 1/2 + j/2048 for an integer j
    assert np.array_equal((values - 0.5) * 2048, np.round((values - 0.5) * 2048))
    assert values.std() == pytest.approx(0.75, rel=0.05)
    assert values.mean() == pytest.approx(0.5, abs=5 * 0.75 / math.sqrt(2000))


def test_reported_epsilon_covers_the_subsampled_discrete_gaussian() -> None:
    # dp-accounting's privacy-loss distribution of the Poisson-subsampled discrete Gaussian
    # itself (one coordinate, integer sensitivity 1024 = σ/γ: z = 1 on fedloom's coarsest
    # default grid), pessimistic, 50 rounds at q = 0.1: below the ε fedloom reports
    from dp_accounting.pld import privacy_loss_distribution as pld

    discrete_eps = (
        pld.from_discrete_gaussian_mechanism(1024.0, sensitivity=1024, sampling_prob=0.1)
        .self_compose(50)
        .get_epsilon_for_delta(1e-5)
    )
    continuous_eps = (
        pld.from_gaussian_mechanism(1024.0, sensitivity=1024, sampling_prob=0.1)
        .self_compose(50)
        .get_epsilon_for_delta(1e-5)
    )
    assert discrete_eps == pytest.approx(5.1508, abs=1e-3)
    assert discrete_eps == pytest.approx(continuous_eps, rel=1e-3)
    for kind in ("prv", "rdp"):
        acc = Accountant(kind)
        acc.step(1.0, 0.1, 50)
        assert acc.epsilon(1e-5) >= discrete_eps  # PRV 5.159, RDP 5.881
