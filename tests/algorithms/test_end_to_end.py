"""Each strategy learns digits, and SCAFFOLD's control variates survive a resume bit for bit."""

from pathlib import Path

import pytest
import torch

from fedloom.client.store import load_client_states
from fedloom.config import load_config
from fedloom.experiment import Experiment, resume
from fedloom.server.checkpoint import load_checkpoint

SMALL = [
    "model.name=logreg",
    "clients.num=6",
    "clients.per_round=3",
    "train.batch_size=16",
    "data.partition=dirichlet",
    "data.alpha=0.5",
]


def run(tmp_path: Path, name: str, overrides: list[str]):
    cfg = load_config(None, [*SMALL, *overrides, f"output_dir={tmp_path / name}"])
    return Experiment(cfg).run()


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ["strategy.name=fedprox", "strategy.mu=0.1"],
        ["strategy.name=scaffold", "train.momentum=0", "train.lr=0.2"],
        ["strategy.name=fednova"],
        ["strategy.name=fedadam", "strategy.server_lr=0.1"],
    ],
)
def test_strategy_learns_digits(tmp_path, overrides):
    result = run(tmp_path, "run", ["rounds=6", *overrides])
    assert result.summary["final_test_accuracy"] > 0.8


@pytest.mark.slow
def test_scaffold_resume_is_bit_identical(tmp_path):
    overrides = ["strategy.name=scaffold", "train.momentum=0", "train.lr=0.2"]
    straight = run(tmp_path, "straight", ["rounds=4", *overrides])
    run(tmp_path, "split", ["rounds=2", *overrides])
    ckpt = load_checkpoint(tmp_path / "split" / "checkpoint")
    assert any(k.startswith("scaffold_c/") for k in ckpt.strategy_tensors)
    states = load_client_states(tmp_path / "split" / "clients", ckpt.round)
    assert not ckpt.client_states and states  # client state stays in the client store
    assert all(any(k.startswith("scaffold_ci/") for k in s) for s in states.values())
    resumed = resume(tmp_path / "split", ["rounds=4"]).run()
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
