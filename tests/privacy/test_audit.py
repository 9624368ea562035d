import numpy as np
import pytest
from typer.testing import CliRunner

from fedloom.cli import app
from fedloom.config import load_config
from fedloom.core.errors import ConfigError
from fedloom.privacy.audit import _lower_bound, audit_config

ARGS = [
    "clients.num=20",
    "clients.per_round=10",
    "model.name=logreg",
    "rounds=3",
    "privacy.mode=central",
    "privacy.noise_multiplier=2.0",
]


def test_lower_bound_of_perfect_separation_is_set_by_the_number_of_runs() -> None:
    members = np.array([True, False] * 500)
    scores = members.astype(float)
    eps, fpr, fnr = _lower_bound(scores, members, 1e-5, 0.05)
    # 250 negatives, 0 errors: Clopper-Pearson upper bound 1 - 0.025^(1/250) = 0.01465
    assert (fpr, fnr) == (0.0, 0.0)
    assert eps == pytest.approx(np.log((1 - 1e-5 - 0.01465) / 0.01465), abs=0.01)  # ≈ 4.21


def test_lower_bound_of_coin_flips_is_zero() -> None:
    rng = np.random.default_rng(0)
    eps, _, _ = _lower_bound(rng.normal(size=2000), rng.random(2000) < 0.5, 1e-5, 0.05)
    assert eps < 0.3


@pytest.mark.slow
def test_correct_mechanism_lower_bound_does_not_exceed_accountant() -> None:
    result = audit_config(load_config(None, ARGS), trials=1000)
    assert result.epsilon_upper == pytest.approx(2.216, abs=0.01)  # PRV, the default (RDP: 2.466)
    assert 0 <= result.epsilon_lower <= result.epsilon_upper
    assert not result.violation


@pytest.mark.slow
@pytest.mark.parametrize("broken", ["no_noise", "no_clip"])
def test_broken_mechanism_is_flagged(broken: str) -> None:
    result = audit_config(load_config(None, ARGS), trials=1000, broken=broken)  # type: ignore[arg-type]
    assert result.violation  # measured lower bounds: 3.96 (no noise), 3.66 (no clip) > 2.47
    assert result.fpr < 0.05


@pytest.mark.slow
def test_cli_exit_code_flags_violation() -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", *ARGS, "--trials", "200"])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["audit", *ARGS, "--trials", "1000", "--broken", "no_noise"])
    assert bad.exit_code == 3, bad.output


def test_audit_needs_central_mode() -> None:
    with pytest.raises(ConfigError, match="privacy.mode=central"):
        audit_config(load_config(None, ["privacy.mode=local", "privacy.noise_multiplier=1"]))
