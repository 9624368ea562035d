from pathlib import Path

import pytest
import torch
from opacus.accountants import PRVAccountant
from torch import nn

from fedloom.config import load_config
from fedloom.core.errors import ConfigError
from fedloom.experiment import Experiment
from fedloom.privacy.dpsgd import ClientLedgers, DPSGDTrainer

ARGS = [
    "clients.num=5",
    "clients.per_round=5",
    "model.name=logreg",
    "train.lr=1.0",
    "train.momentum=0",
    "train.batch_size=32",
    "privacy.mode=dpsgd",
    "privacy.clip=1.0",
]


@pytest.mark.slow
def test_dpsgd_learns_and_reports_per_client_epsilon(tmp_path: Path) -> None:
    cfg = load_config(
        None, [*ARGS, f"output_dir={tmp_path}", "rounds=3", "privacy.noise_multiplier=1.0"]
    )
    exp = Experiment(cfg)
    result = exp.run()
    ledgers = exp.stateful["privacy"]
    assert isinstance(ledgers, ClientLedgers) and len(ledgers.accountants) == 5
    # every client: 3 rounds x ceil(n/32) steps at q = 32/n, σ = 1
    sizes = [len(ix) for ix in exp.data.client_indices]
    worst = []
    for n in sizes:
        reference = PRVAccountant()  # Opacus' own: the default accountant, independently
        reference.history = [(1.0, 32 / n, 3 * -(-n // 32))]
        worst.append(reference.get_epsilon(delta=1e-5))
    assert result.metrics[-1]["epsilon"] == pytest.approx(max(worst))
    assert all(m["accountant"] == "prv" for m in result.metrics)
    assert result.summary["final_test_accuracy"] > 0.7  # measured 0.84 (no noise: 0.84)


@pytest.mark.slow
def test_dpsgd_is_reproducible(tmp_path: Path) -> None:
    args = [*ARGS, "rounds=1", "privacy.noise_multiplier=1.0"]
    a = Experiment(load_config(None, [*args, f"output_dir={tmp_path / 'a'}"])).run()
    b = Experiment(load_config(None, [*args, f"output_dir={tmp_path / 'b'}"])).run()
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_batchnorm_gets_an_error_naming_the_layer_and_the_fix(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.Linear(16, 10))
    cfg = load_config(None, [*ARGS, "privacy.noise_multiplier=1.0", f"output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="BatchNorm") as info:
        Experiment(cfg, model=model)
    assert "GroupNorm" in str(info.value)


@pytest.mark.slow
def test_each_client_is_calibrated_from_its_own_rate_and_steps(tmp_path: Path) -> None:
    cfg = load_config(
        None, [*ARGS, "rounds=2", "privacy.target_epsilon=4", f"output_dir={tmp_path}"]
    )
    exp = Experiment(cfg)
    trainer = exp.parts.trainer
    assert isinstance(trainer, DPSGDTrainer)
    sizes = [len(ix) for ix in exp.data.client_indices]
    assert len(set(sizes)) > 1  # clients differ: one shared worst case would overshoot
    for k, n in enumerate(sizes):
        z = trainer.noise_multipliers[str(k)]
        reference = PRVAccountant()  # Opacus' own, independent of fedloom's adapter
        reference.history = [(z, 32 / n, 2 * -(-n // 32))]
        # every client's own ε lands just below the target, none far below it
        assert 0.99 * 4.0 <= reference.get_epsilon(delta=1e-5) <= 4.0
    assert "noise_multipliers" not in exp.parts.notes["privacy"]  # a per-client statistic


def test_empty_poisson_batches_still_take_a_noise_step() -> None:
    from fedloom.client.context import FitContext
    from fedloom.client.trainer import TrainConfig
    from fedloom.data.base import TensorData
    from fedloom.privacy.dpsgd import DPSGDTrainer
    from fedloom.privacy.noise import SeededNoise

    torch.manual_seed(0)
    data = TensorData(torch.randn(20, 4), torch.randint(0, 2, (20,)))
    model = nn.Linear(4, 2)
    before = model.weight.detach().clone()
    ledgers = ClientLedgers("rdp", 1e-5)
    trainer = DPSGDTrainer(
        TrainConfig(batch_size=1, local_steps=30, lr=0.1, momentum=0.0),
        clip=1.0,
        noise_multipliers={"c": 1.0},
        noise=SeededNoise(0, "t"),
        ledgers=ledgers,
    )
    ctx = FitContext("c", 1, {}, {}, {}, 0)
    result = trainer.train(model, data, torch.Generator().manual_seed(1), ctx)
    # q = 1/20: about 30 * 0.95^20 ≈ 11 of the 30 steps see an empty batch, all are steps
    assert result.steps == 30
    assert not torch.equal(before, model.weight.detach())
    assert ledgers.accountants["c"].history == [(1.0, 0.05, 30)]
    assert not hasattr(model, "_forward_hooks") or not model._forward_hooks  # hooks removed


@pytest.mark.slow
def test_dpsgd_budget_stop(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            *ARGS,
            f"output_dir={tmp_path}",
            "rounds=5",
            "privacy.noise_multiplier=1.0",
            "privacy.max_epsilon=4.2",
        ],
    )
    result = Experiment(cfg).run()
    # per-client ε (PRV, Opacus' PRVAccountant) after rounds 1, 2, 3: 3.02, 3.81, 4.44
    assert result.summary["rounds"] == 2
    assert result.metrics[-1]["epsilon"] <= 4.2
    assert "round 3 would bring epsilon" in result.summary["stopped_early"]
