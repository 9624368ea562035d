import math

import pytest
import torch
from scipy.stats import binom, norm
from typer.testing import CliRunner

from fedloom.cli import app
from fedloom.config import load_config
from fedloom.core.errors import ConfigError
from fedloom.experiment import Experiment
from fedloom.privacy.audit import (
    accuracy_lower,
    audit_config,
    central_game,
    dpsgd_game,
    epsilon_lower,
    local_game,
    max_accuracy,
    per_round_claim,
)
from fedloom.privacy.canary import (
    CanarySampler,
    IncludingSampler,
    ScaledNoise,
    canary_direction,
)
from fedloom.privacy.noise import SeededNoise
from fedloom.privacy.sgd_canary import clipped_sum, step_direction

ARGS = [
    "clients.num=10",
    "clients.per_round=10",
    "model.name=logreg",
    "rounds=3",
    "train.batch_size=64",
    "privacy.mode=central",
    "privacy.noise_multiplier=1.0",
]


LOCAL = [*ARGS[:-2], "privacy.mode=local", "privacy.noise_multiplier=1.0"]
DPSGD = [*ARGS[:-2], "privacy.mode=dpsgd", "privacy.noise_multiplier=1.0"]


def _experiment(args: list[str]) -> Experiment:
    config = load_config(None, args)
    return Experiment(config.model_copy(update={"output_dir": "/nonexistent-audit"}))


def test_accuracy_lower_bound_is_clopper_pearson() -> None:
    # 10 right out of 10: P[Bin(10, p) >= 10] = p^10 = 0.05
    assert accuracy_lower(10, 10, 0.05) == pytest.approx(0.05**0.1, abs=1e-12)  # 0.74113
    p = accuracy_lower(80, 100, 0.05)
    assert binom.sf(79, 100, p) == pytest.approx(0.05, abs=1e-9)
    assert accuracy_lower(0, 100, 0.05) == 0.0


def test_epsilon_lower_bound_by_hand() -> None:
    p = 0.05**0.1  # 0.741134
    assert epsilon_lower(10, 10, 0.0, 0.05) == pytest.approx(math.log(p / (1 - p)))  # 1.0519
    assert epsilon_lower(10, 10, 0.1, 0.05) == pytest.approx(math.log((p - 0.1) / (1 - p)))
    assert epsilon_lower(55, 100, 0.0, 0.05) == 0.0  # 0.55 right: lower bound below ½


def test_max_accuracy_of_a_dp_release() -> None:
    assert max_accuracy(math.log(3), 0.0) == pytest.approx(0.75)
    assert max_accuracy(0.0, 0.2) == pytest.approx(0.6)
    assert max_accuracy(math.inf, 1e-5) == 1.0


def test_per_round_claim_of_the_gaussian_mechanism_is_its_best_coin_guess() -> None:
    # N(0, z²) vs N(1, z²): the best guess of a fair coin is right with Φ(1 / 2z)
    for z in (1.0, 2.0):
        claim = per_round_claim("prv", z, 1e-5)
        assert claim.max_accuracy == pytest.approx(norm.cdf(0.5 / z), abs=0.003)
        assert claim.max_accuracy >= norm.cdf(0.5 / z) - 1e-4  # never tighter than the truth
    assert per_round_claim("prv", 1.0, 1e-5).delta == pytest.approx(0.383, abs=0.01)


def test_canary_direction_is_a_unit_vector_whatever_the_name_order() -> None:
    template = {"b": torch.zeros(3), "a": torch.zeros(2, 2)}
    u = canary_direction(template, 0, 5)
    v = canary_direction(dict(reversed(template.items())), 0, 5)
    assert math.fsum(float(t.pow(2).sum()) for t in u.values()) == pytest.approx(1.0)
    assert all(torch.equal(u[n], v[n]) for n in template)
    assert not torch.equal(u["a"], canary_direction(template, 0, 6)["a"])


def test_canary_sampler_adds_the_rounds_canary_when_its_coin_is_in() -> None:
    class Fixed:
        expected_per_round = 2.0

        def sample(self, rnd: int) -> list[int]:
            return [0, 1]

    sampler = CanarySampler(Fixed(), 10, [True, False])
    assert sampler.sample(1) == [0, 1, 10]
    assert sampler.sample(2) == [0, 1]


def test_scaled_noise_scales_the_discrete_gaussian() -> None:
    inner = SeededNoise(0, "test")
    half = ScaledNoise(inner, 0.5).discrete_gaussian(torch.Size([20000]), 1000.0, 1)
    assert float(half.double().std()) == pytest.approx(500.0, rel=0.03)
    zero = ScaledNoise(inner, 0.0).discrete_gaussian(torch.Size([5]), 1000.0, 1)
    assert zero.dtype == torch.int64 and not zero.any()


def test_auditor_recovers_each_canarys_share_exactly_without_noise() -> None:
    experiment = _experiment(ARGS)
    game = central_game(experiment, [True, False, True, False], "no_noise", 0)
    # in: the server clipped 10·clip to clip (share 1); out: 0; the real clients subtracted
    assert game.scores == pytest.approx([1.0, 0.0, 1.0, 0.0], abs=1e-3)
    assert (game.threshold, game.noise_multiplier) == (0.5, 1.0)


def test_local_canary_release_is_its_clipped_signed_update_without_noise() -> None:
    game = local_game(_experiment(LOCAL), [True, False, False, True], "no_noise", 0)
    # the local mechanism clipped ±10·clip·u to ±clip·u (then rounded onto its grid)
    assert game.scores == pytest.approx([1.0, -1.0, -1.0, 1.0], abs=1e-3)
    assert game.threshold == 0.0


def test_half_noise_is_flagged_and_the_correct_mechanism_is_not() -> None:
    config = load_config(None, ARGS)
    half = audit_config(config, canaries=150, broken="half_noise")
    correct = audit_config(config, canaries=150)
    assert half.epsilon_claimed == correct.epsilon_claimed < 0.05  # at δ ≈ 0.38
    assert half.max_accuracy == pytest.approx(0.693, abs=0.002)  # Φ(½) = 0.691
    assert half.violation and half.epsilon_lower > half.epsilon_claimed
    assert half.correct == 129  # of 150; Φ(1) = 0.84 expected
    assert not correct.violation and correct.epsilon_lower == 0.0
    assert correct.correct == 107  # of 150; Φ(½) = 0.69 expected


@pytest.mark.slow
def test_local_dp_half_noise_is_flagged_and_the_correct_mechanism_is_not() -> None:
    config = load_config(None, LOCAL)
    half = audit_config(config, canaries=150, broken="half_noise")
    correct = audit_config(config, canaries=150)
    assert half.max_accuracy == pytest.approx(0.693, abs=0.002)  # sensitivity 2·clip, z = 1
    assert half.violation and (half.correct, correct.correct) == (132, 102)  # of 150
    assert not correct.violation


@pytest.mark.slow
@pytest.mark.parametrize(("broken", "right"), [("no_noise", 100), ("no_clip", 83)])
def test_broken_mechanism_is_flagged(broken: str, right: int) -> None:
    result = audit_config(load_config(None, ARGS), canaries=100, broken=broken)  # type: ignore[arg-type]
    # no noise: every guess right; no clip: every canary in is seen (share 10), the
    # threshold ½ still errs on 31% of the canaries out, as for the correct mechanism
    assert result.violation
    assert result.correct == right


@pytest.mark.slow
def test_cli_exit_code_flags_violation() -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", *ARGS, "--canaries", "100"])
    assert ok.exit_code == 0, ok.output
    assert "consistent" in ok.output
    bad = runner.invoke(app, ["audit", *ARGS, "--canaries", "100", "--broken", "half_noise"])
    assert bad.exit_code == 3, bad.output


def test_audit_refuses_what_it_cannot_audit() -> None:
    with pytest.raises(ConfigError, match="privacy.mode=central, local or dpsgd"):
        audit_config(load_config(None, ["privacy.mode=none"]))
    with pytest.raises(ConfigError, match="no_clip is a control of privacy.mode=central"):
        audit_config(load_config(None, DPSGD), canaries=20, broken="no_clip")
    with pytest.raises(ConfigError, match="no_clip is a control of privacy.mode=central"):
        audit_config(load_config(None, LOCAL), canaries=20, broken="no_clip")
    with pytest.raises(ConfigError, match="canaries must be >= 20"):
        audit_config(load_config(None, ARGS), canaries=10)
    runner = CliRunner()
    bad = runner.invoke(app, ["audit", *ARGS, "--broken", "quarter_noise"])
    assert bad.exit_code == 2


def test_clipped_sum_clips_each_sample_over_all_its_tensors_as_opacus_does() -> None:
    # sample 1: ‖(3, 4, 0)‖ = 5, scaled to norm 1; sample 2: ‖(0.3, 0, 0.4)‖ = 0.5, kept
    weight = torch.tensor([[3.0, 4.0], [0.3, 0.0]])
    bias = torch.tensor([[0.0], [0.4]])
    summed = clipped_sum([weight, bias], 1.0)
    assert summed[0].tolist() == pytest.approx([0.6 + 0.3, 0.8], abs=1e-6)
    assert summed[1].tolist() == pytest.approx([0.4], abs=1e-6)
    empty = clipped_sum([torch.zeros(0, 2), torch.zeros(0, 1)], 1.0)
    assert empty[0].tolist() == [0.0, 0.0] and empty[1].tolist() == [0.0]


def test_step_direction_is_a_fresh_unit_vector_per_step() -> None:
    shapes = [torch.Size([2, 3]), torch.Size([4])]
    u = step_direction(shapes, 0, 7)
    assert math.fsum(float(t.pow(2).sum()) for t in u) == pytest.approx(1.0)
    assert torch.equal(u[0], step_direction(shapes, 0, 7)[0])
    assert not torch.equal(u[0], step_direction(shapes, 0, 8)[0])


def test_including_sampler_adds_the_audited_client_only_when_left_out() -> None:
    class Fixed:
        expected_per_round = 2.0

        def sample(self, rnd: int) -> list[int]:
            return [0, 1] if rnd == 1 else [2, 3]

    sampler = IncludingSampler(Fixed(), 0)
    assert sampler.sample(1) == [0, 1]
    assert sampler.sample(2) == [2, 3, 0]


def test_dpsgd_auditor_recovers_each_gradient_canarys_share_without_noise() -> None:
    coins = [True, False, True, False, False, True, True]
    game = dpsgd_game(_experiment(DPSGD), coins, "no_noise", 0)
    # Opacus clipped the 10·clip canary gradient to clip (share 1); the batch subtracted
    assert game.scores == pytest.approx([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0], abs=1e-5)
    assert (game.threshold, game.noise_multiplier) == (0.5, 1.0)
    assert game.run_epsilon == pytest.approx(9.05, abs=0.01)  # client 0: q = 64/143, 9 steps


def test_dpsgd_half_noise_is_flagged_and_the_correct_mechanism_is_not() -> None:
    config = load_config(None, DPSGD)
    half = audit_config(config, canaries=150, broken="half_noise")
    correct = audit_config(config, canaries=150)
    assert half.max_accuracy == pytest.approx(0.693, abs=0.002)  # one step, z = 1: Φ(½)
    assert half.violation and half.epsilon_lower > half.epsilon_claimed
    assert (half.correct, correct.correct) == (127, 101)  # of 150; Φ(1), Φ(½): 126, 104
    assert half.unit == "step"
    assert not correct.violation and correct.epsilon_lower == 0.0


@pytest.mark.slow
def test_cli_flags_dpsgd_half_noise() -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", *DPSGD, "--canaries", "100"])
    assert ok.exit_code == 0, ok.output
    assert "one step" in ok.output
    bad = runner.invoke(app, ["audit", *DPSGD, "--canaries", "100", "--broken", "half_noise"])
    assert bad.exit_code == 3, bad.output
