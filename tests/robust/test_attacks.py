"""Attacks: who attacks, what they send, and what that does to FedAvg vs robust rules."""

from pathlib import Path

import pytest
import torch

from fedloom.client.context import FitContext
from fedloom.config import load_config
from fedloom.data.base import TensorData
from fedloom.experiment import Experiment
from fedloom.robust.attacks import attack_hook, choose_attackers, flip_labels
from fedloom.robust.config import AttackConfig


def ctx(cid: str, rnd: int = 1) -> FitContext:
    return FitContext(cid, rnd, {}, {}, {}, seed=7)


def test_attackers_are_a_seeded_fraction():
    a = choose_attackers(20, 0.2, seed=3)
    assert len(a) == 4 and a == choose_attackers(20, 0.2, seed=3)
    assert a != choose_attackers(20, 0.2, seed=4)
    assert choose_attackers(20, 0.0, seed=3) == frozenset()


def test_update_attacks_touch_only_attackers():
    u = {"w": torch.tensor([1.0, -2.0])}
    flip = attack_hook(AttackConfig(kind="sign_flip"), frozenset({"1"}))
    assert flip(u, ctx("1"))["w"].tolist() == [-1.0, 2.0]
    assert flip(u, ctx("0")) is u
    scale = attack_hook(AttackConfig(kind="scale", scale=5.0), frozenset({"1"}))
    assert scale(u, ctx("1"))["w"].tolist() == [5.0, -10.0]
    noise = attack_hook(AttackConfig(kind="gaussian", noise_std=3.0), frozenset({"1"}))
    a, b = noise(u, ctx("1"))["w"], noise(u, ctx("1"))["w"]
    assert torch.equal(a, b) and not torch.equal(a, noise(u, ctx("1", rnd=2))["w"])
    big = noise({"w": torch.zeros(20000)}, ctx("1"))["w"]
    assert big.std().item() == pytest.approx(3.0, rel=0.03)


def test_label_flip():
    data = TensorData(torch.zeros(3, 2), torch.tensor([0, 3, 9]))
    assert flip_labels(data, 10).y.tolist() == [9, 6, 0]


BASE = [
    "rounds=5",
    "model.name=logreg",
    "clients.num=10",
    "clients.per_round=10",
    "train.batch_size=16",
    "attack.kind=scale",
    "attack.fraction=0.2",
    "attack.scale=50",
]


def final_accuracy(tmp_path: Path, name: str, extra: list[str]) -> float:
    cfg = load_config(None, [*BASE, *extra, f"output_dir={tmp_path / name}"])
    result = Experiment(cfg).run()
    assert len(result.summary["attackers"]) == 2
    return result.summary["final_test_accuracy"]


@pytest.mark.slow
def test_scaling_attack_breaks_fedavg(tmp_path):
    assert final_accuracy(tmp_path, "fedavg", []) < 0.6


@pytest.mark.slow
def test_median_survives_the_scaling_attack(tmp_path):
    assert final_accuracy(tmp_path, "median", ["strategy.aggregator=median"]) > 0.85
