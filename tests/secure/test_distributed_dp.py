"""Distributed DP: the KLS21 accountant against an exact numeric Rényi divergence, and
the DDG encoding (rotation, granularity, noise) against independent computations."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.linalg import hadamard as dense_hadamard
from scipy.special import logsumexp

from fedloom.config import load_config
from fedloom.core.seeding import numpy_rng
from fedloom.experiment import Experiment
from fedloom.privacy.ddg import DDGSum, calibrate_multiplier, hadamard, noise_source, padded
from fedloom.privacy.discrete import discrete_gaussian_pmf
from fedloom.privacy.distributed import ORDERS, DDGAccountant, rdp, rounded_l2_bound, tau
from fedloom.secure.encoding import MAX_BITS


def exact_rdp_of_sum(scale: float, n: int, shift: int, alpha: float) -> float:
    """D_α(Y + shift || Y) for Y the sum of n independent N_Z(0, scale²), by convolution
    of the exact pmf and direct summation (one coordinate)."""
    k, p = discrete_gaussian_pmf(scale, width=30.0)
    pmf = p
    for _ in range(n - 1):
        pmf = np.convolve(pmf, p)
    shifted = np.concatenate([np.zeros(shift), pmf[: len(pmf) - shift]])
    keep = (pmf > 0) & (shifted > 0)
    log_terms = alpha * np.log(shifted[keep]) + (1 - alpha) * np.log(pmf[keep])
    return float(logsumexp(log_terms) / (alpha - 1))


@pytest.mark.parametrize(("scale", "n", "shift"), [(1.0, 3, 1), (2.0, 4, 3), (0.8, 2, 1)])
def test_kls21_bound_holds_and_is_close_to_the_exact_divergence(
    scale: float, n: int, shift: int
) -> None:
    orders = [2.0, 4.0, 8.0, 16.0]
    bound = rdp(orders, float(shift), float(shift), scale, n, 1)
    for alpha, b in zip(orders, bound, strict=True):
        exact = exact_rdp_of_sum(scale, n, shift, alpha)
        assert exact <= b + 1e-12
        # τ is the whole gap: the bound is the Gaussian value α·Δ²/(2ns²) plus O(τ)
        gaussian = alpha * shift**2 / (2 * n * scale**2)
        assert abs(exact - gaussian) <= 2 * tau(scale, n) + 1e-9
        assert b - exact <= max(0.02 * exact, 2 * tau(scale, n)) + 1e-9


def test_tau_by_hand() -> None:
    # n = 2: τ = 10·exp(−2π²s²·1/2) = 10·exp(−π²) at s = 1
    assert tau(1.0, 2) == pytest.approx(10 * math.exp(-(math.pi**2)), rel=1e-12)
    assert tau(1.0, 1) == 0.0


def test_accountant_composes_rounds_and_restores() -> None:
    acc = DDGAccountant(l2=10.0, l1=100.0, local_scale=20.0, n=8, dim=1024)
    assert acc.epsilon(1e-5) == 0.0
    one = acc.epsilon(1e-5, rounds=1)
    four = acc.epsilon(1e-5, rounds=4)
    assert 0 < one < four < 4 * one  # composition is sublinear in ε
    for _ in range(4):
        acc.step()
    again = DDGAccountant(10.0, 100.0, 20.0, 8, 1024)
    again.load_state_dict(acc.state_dict())
    assert again.epsilon(1e-5) == four
    # with τ ≈ 0 it is the Gaussian mechanism's RDP: α·Δ²/(2·n·s²) per round
    per_round = rdp(ORDERS, 10.0, 100.0, 20.0, 8, 1024)
    assert per_round[0] == pytest.approx(2 * 100 / (2 * 8 * 400), rel=1e-9)


def test_rounded_l2_bound() -> None:
    assert rounded_l2_bound(3.0, 16, 0.0) == 3.0 + 4.0
    b = rounded_l2_bound(100.0, 64, math.exp(-0.5))
    assert 100 < b < 100 + 8
    assert b == pytest.approx(math.sqrt(100**2 + 16 + 1.0 * (100 + 4)))


def test_hadamard_matches_the_dense_matrix_and_is_its_own_inverse() -> None:
    x = np.arange(8, dtype=np.float64) - 3.5
    expected = dense_hadamard(8) @ x / math.sqrt(8)
    assert np.allclose(hadamard(x), expected)
    assert np.allclose(hadamard(hadamard(x)), x)
    assert padded(5) == 8 and padded(8) == 8 and padded(1) == 1
    with pytest.raises(ValueError, match="power-of-two"):
        hadamard(np.zeros(6))


def _ddg(dim: int, z: float, n: int, t: int, bits: int = 20) -> DDGSum:
    return DDGSum(dim, 1.0, z, n, t, bits, 0, noise_source(0, secure=False))


def test_ddg_sum_decodes_the_clipped_mean_without_noise() -> None:
    codec = _ddg(dim=100, z=1e-6, n=4, t=3)
    rng = numpy_rng(1, "updates")
    updates = [rng.normal(size=100) * s for s in (0.01, 0.05, 0.1, 3.0)]  # the last is clipped
    total = np.zeros(codec.length, dtype=np.uint64)
    for k, u in enumerate(updates):
        total += codec.encode(u, 1, 0.0, 1, str(k))
    total &= np.uint64((1 << codec.bits) - 1)
    decoded = codec.decode(total, 4, 1)
    clipped = [u * min(1.0, 1.0 / np.linalg.norm(u)) for u in updates]
    assert decoded.weight == 4 and decoded.loss is None
    # rounding error: each client's rounding has std ≤ γ/2 per coordinate
    assert np.abs(decoded.mean - np.mean(clipped, axis=0)).max() < 3 * codec.gamma
    assert codec.accountant.rounds == 0  # the round phase counts releases
    codec.released(1)
    assert codec.accountant.rounds == 1


def test_ddg_noise_of_t_survivors_has_the_central_std() -> None:
    """Any t survivors carry variance σ²: the sum of their zero updates is pure noise."""
    t = 4
    codec = _ddg(dim=4096, z=0.5, n=6, t=t)
    total = np.zeros(codec.length, dtype=np.uint64)
    for k in range(t):
        total += codec.encode(np.zeros(4096), 1, 0.0, 2, str(k))
    total &= np.uint64((1 << codec.bits) - 1)
    noise_sum = codec.decode(total, t, 2).mean * t  # in update units
    assert np.std(noise_sum) == pytest.approx(0.5 * 1.0, rel=0.05)
    assert codec.local_scale == pytest.approx(0.5 / (codec.gamma * math.sqrt(t)))


def test_modulus_holds_four_sigmas_of_the_sum() -> None:
    codec = _ddg(dim=1024, z=1.0, n=16, t=9, bits=16)
    spread = math.sqrt(16**2 / 1024 + 16 / 9)
    assert codec.gamma * 2**15 == pytest.approx(4 * spread)
    assert codec.bits <= MAX_BITS


def test_calibration_hits_the_target() -> None:
    def make(z: float) -> DDGSum:
        return _ddg(dim=1024, z=z, n=16, t=9, bits=18)

    z = calibrate_multiplier(4.0, 1e-5, 10, make)
    assert make(z).accountant.epsilon(1e-5, 10) <= 4.0
    assert make(z * 0.99).accountant.epsilon(1e-5, 10) > 4.0


DP_RUN = [
    "clients.num=8",
    "clients.per_round=8",
    "model.name=logreg",
    "train.lr=0.1",
    "eval_every=100",
    "secure.mode=secagg",
    "privacy.mode=distributed",
    "privacy.noise_multiplier=0.5",
    "privacy.clip=2.0",
]


def test_a_distributed_dp_run_reports_epsilon_every_round(tmp_path: Path) -> None:
    result = Experiment(load_config(None, [*DP_RUN, "rounds=2", f"output_dir={tmp_path}"])).run()
    notes = result.summary["privacy"]
    first, second = result.metrics
    assert first["accountant"] == second["accountant"] == "ddg-kls21"
    assert first["delta"] == 1e-5 and first["train_loss"] is None
    # independently: the KLS21 RDP of the reported parameters, composed, converted
    acc = DDGAccountant(
        notes["l2_sensitivity"],
        min(notes["l2_sensitivity"] ** 2, math.sqrt(1024) * notes["l2_sensitivity"]),
        notes["local_noise_scale"],
        notes["threshold"],
        1024,  # logreg on digits: 64·10 + 10 = 650 coordinates, padded
    )
    assert first["epsilon"] == pytest.approx(acc.epsilon(1e-5, 1), rel=1e-9)
    assert second["epsilon"] == pytest.approx(acc.epsilon(1e-5, 2), rel=1e-9)
    assert result.summary["final_test_accuracy"] > 0.5  # σ = clip/2 over 8 clients


def test_the_budget_stops_a_distributed_dp_run(tmp_path: Path) -> None:
    probe = Experiment(load_config(None, [*DP_RUN, "rounds=1", f"output_dir={tmp_path / 'a'}"]))
    eps = probe.run().metrics[0]["epsilon"]
    limit = f"privacy.max_epsilon={eps * 1.2}"
    cfg = load_config(None, [*DP_RUN, "rounds=3", limit, f"output_dir={tmp_path / 'b'}"])
    result = Experiment(cfg).run()
    assert len(result.metrics) == 1
    assert "privacy budget" in (result.summary["stopped_early"] or "")
