import math

import pytest
from opacus.accountants import PRVAccountant

from fedloom.core.errors import ConfigError
from fedloom.privacy.accountant import Accountant, calibrate

dp_accounting = pytest.importorskip("dp_accounting")


def _reference_rdp(parts: list[tuple[float, float, int]], delta: float) -> float:
    """Google's dp-accounting (an independent implementation) for the same history."""
    acc = dp_accounting.rdp.RdpAccountant()
    for q, sigma, steps in parts:
        event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
        acc.compose(event, steps)
    return float(acc.get_epsilon(delta))


def test_opacus_documented_case_matches_reference() -> None:
    # Opacus' (and TF Privacy's) docstring example: 10 steps at q=1e-5, σ=1, then
    # 4 steps at q=1e-4, σ=3 give ε ≈ 0.336 at δ=1e-5.
    acc = Accountant("rdp")
    acc.step(1.0, 1e-5, 10)
    acc.step(3.0, 1e-4, 4)
    eps = acc.epsilon(1e-5)
    assert eps == pytest.approx(0.336, abs=5e-4)
    assert eps == pytest.approx(_reference_rdp([(1e-5, 1.0, 10), (1e-4, 3.0, 4)], 1e-5), rel=1e-6)


@pytest.mark.parametrize(
    ("q", "sigma", "steps"), [(0.01, 1.1, 1000), (0.1, 1.0, 100), (1.0, 5.0, 20)]
)
def test_rdp_matches_dp_accounting(q: float, sigma: float, steps: int) -> None:
    acc = Accountant("rdp")
    acc.step(sigma, q, steps)
    assert acc.epsilon(1e-5) == pytest.approx(_reference_rdp([(q, sigma, steps)], 1e-5), rel=1e-3)


def test_prv_is_close_to_pld_reference_and_tighter_than_rdp() -> None:
    prv, rdp = Accountant("prv"), Accountant("rdp")
    prv.step(1.0, 0.1, 100)
    rdp.step(1.0, 0.1, 100)
    pld = dp_accounting.pld.PLDAccountant()
    pld.compose(dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(1.0)), 100)
    assert prv.epsilon(1e-5) == pytest.approx(pld.get_epsilon(1e-5), rel=0.01)  # ≈ 7.05
    assert prv.epsilon(1e-5) < rdp.epsilon(1e-5)  # ≈ 7.90


def test_epsilon_is_zero_before_any_step_and_infinite_without_noise() -> None:
    acc = Accountant()
    assert acc.epsilon(1e-5) == 0.0
    acc.step(0.0, 0.5)
    assert math.isinf(acc.epsilon(1e-5))


def test_state_round_trip_continues_epsilon_and_rejects_other_kind() -> None:
    a = Accountant()
    a.step(1.0, 0.1, 30)
    b = Accountant()
    b.load_state_dict(a.state_dict())
    a.step(1.0, 0.1, 20)
    b.step(1.0, 0.1, 20)
    assert b.steps == 50
    assert b.epsilon(1e-5) == a.epsilon(1e-5)
    with pytest.raises(ConfigError, match="accountant"):
        Accountant("rdp").load_state_dict(a.state_dict())


def test_epsilon_after_leaves_state_unchanged() -> None:
    acc = Accountant()
    acc.step(1.0, 0.1, 10)
    before = acc.epsilon(1e-5)
    ahead = acc.epsilon_after(1.0, 0.1, 1e-5, steps=5)
    assert acc.epsilon(1e-5) == before
    acc.step(1.0, 0.1, 5)
    assert acc.epsilon(1e-5) == ahead


@pytest.mark.parametrize(
    ("target", "q", "steps"), [(1.0, 0.1, 100), (4.0, 0.05, 200), (8.0, 1.0, 10)]
)
def test_calibration_lands_within_one_percent_below_target(
    target: float, q: float, steps: int
) -> None:
    sigma = calibrate(target, 1e-5, q, steps)  # the default, PRV
    acc = Accountant()
    acc.step(sigma, q, steps)
    eps = acc.epsilon(1e-5)
    assert acc.last_kind == "prv"
    assert 0.99 * target <= eps <= target
    # Opacus' own PRVAccountant, independently of fedloom's adapter
    reference = PRVAccountant()
    reference.history = [(sigma, q, steps)]
    assert reference.get_epsilon(delta=1e-5) == pytest.approx(eps, rel=1e-9)


def test_unreachable_target_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unreachable"):
        calibrate(1e-9, 1e-5, 1.0, 10_000)


def test_cached_rdp_curves_give_opacus_epsilon_bit_for_bit() -> None:
    from opacus.accountants import RDPAccountant

    history = [(0.8, 64 / 143, 30), (1.1, 0.01, 1000), (0.8, 64 / 143, 2)]
    ours = Accountant("rdp")
    for sigma, q, n in history:
        ours.step(sigma, q, n)
    theirs = RDPAccountant()
    theirs.history = list(history)
    assert ours.epsilon(1e-5) == theirs.get_epsilon(delta=1e-5)
    twin = Accountant("rdp")  # a client with the same history reads the shared value
    twin.load_state_dict(ours.state_dict())
    assert twin.epsilon(1e-5) == ours.epsilon(1e-5)
    assert twin.epsilon(1e-6) == theirs.get_epsilon(delta=1e-6)
