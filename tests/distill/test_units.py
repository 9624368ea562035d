"""The pure pieces: who gets which model, the held-out slice, distillation, aggregation."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pytest
import torch
from torch import nn

from fedloom.core.seeding import generator
from fedloom.data.base import FederatedDataset, TensorData
from fedloom.distill.assign import assign_models, split_counts
from fedloom.distill.clients import pack, unpack
from fedloom.distill.config import DistillConfig, ModelShare
from fedloom.distill.data import Unlabeled, hold_out
from fedloom.distill.ensemble import (
    BY_AGREEMENT,
    agreement,
    check_interval,
    distill_into,
    logits_of,
)
from fedloom.distill.feddf import TEACHER, EnsembleAggregator
from fedloom.distill.fedmd import FedMD, ScoreMean
from fedloom.distill.setup import Federation
from fedloom.server.config import StrategyConfig


def test_split_counts_by_largest_remainder() -> None:
    # 7 x (0.5, 0.3, 0.2) = (3.5, 2.1, 1.4): floors (3, 2, 1), the one left goes to 3.5
    assert split_counts([0.5, 0.3, 0.2], 7) == [4, 2, 1]
    assert split_counts([1 / 3] * 3, 10) == [4, 3, 3]
    assert split_counts([0.25, 0.75], 0) == [0, 0]


def test_assignment_is_seeded_exact_and_honours_listed_clients() -> None:
    shares = [
        ModelShare(model="cnn", clients=[0, 1]),
        ModelShare(model="mlp_2nn", fraction=0.75),
        ModelShare(model="logreg", fraction=0.25),
    ]
    first = assign_models(shares, 10, "cnn", seed=3)
    assert first == assign_models(shares, 10, "cnn", seed=3)
    assert first[:2] == ["cnn", "cnn"]
    assert first.count("mlp_2nn") == 6 and first.count("logreg") == 2  # 8 x (0.75, 0.25)
    others = [assign_models(shares, 10, "cnn", seed=s) for s in range(6)]
    assert len({tuple(o) for o in others}) > 1  # the draw depends on the seed
    assert assign_models([], 3, "logreg", seed=0) == ["logreg"] * 3


def _federated(sizes: list[int]) -> FederatedDataset:
    n = sum(sizes)
    x = torch.arange(n, dtype=torch.float32).reshape(n, 1)
    data = TensorData(x, torch.arange(n) % 2)
    bounds = torch.cumsum(torch.tensor([0, *sizes]), 0)
    indices = [torch.arange(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return FederatedDataset(data, data, indices, num_classes=2, input_shape=(1,))


def test_hold_out_takes_a_share_of_each_client_and_keeps_the_rest_disjoint() -> None:
    data = _federated([20, 10, 1, 9])
    reduced, held = hold_out(data, 0.25, seed=0)
    # floor(0.25 * n) of each client: 5 + 2 + 0 + 2
    assert len(held) == 9
    assert [len(i) for i in reduced.client_indices] == [15, 8, 1, 7]
    kept = {float(v) for v in reduced.train.x.flatten()}
    assert kept.isdisjoint({float(v) for v in held.flatten()})
    assert len(kept) + len(held) == 40
    # client 1 still owns only its own examples (values 20..29)
    assert all(20 <= float(v) < 30 for v in reduced.client(1).x.flatten())


def _teacher_task(n: int = 400) -> tuple[Unlabeled, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=gen)
    teacher = nn.Linear(8, 4)
    with torch.no_grad():
        teacher.weight.copy_(torch.randn(4, 8, generator=gen) * 3)
        teacher.bias.zero_()
    data = Unlabeled(fit=x[:300], val=x[300:])
    return data, logits_of(teacher, data.inputs)


def test_distillation_raises_agreement_with_the_teacher() -> None:
    data, teacher = _teacher_task()
    torch.manual_seed(1)
    student = nn.Linear(8, 4)
    cfg = DistillConfig(steps=150, lr=0.05, batch_size=32, check_every=10, patience=5)
    done = distill_into(student, data, teacher, cfg, generator(0, "t"))
    val_teacher = teacher[300:]
    measured = agreement(logits_of(student, data.val), val_teacher)
    assert done.before < 0.5
    assert done.after == measured  # the kept student is the best one scored
    assert measured > 0.9


def test_early_stopping_keeps_the_best_student() -> None:
    data, teacher = _teacher_task()
    torch.manual_seed(1)
    student = nn.Linear(8, 4)
    # lr far too large: training diverges from the teacher; the start is kept if best
    cfg = DistillConfig(steps=200, lr=50.0, batch_size=32, check_every=5, patience=2)
    start = {n: t.clone() for n, t in student.state_dict().items()}
    done = distill_into(student, data, teacher, cfg, generator(0, "t"))
    assert done.steps < 200  # stopped early
    assert done.after >= done.before
    if done.after == done.before:
        assert all(torch.equal(student.state_dict()[n], t) for n, t in start.items())


def test_a_student_that_already_matches_the_teacher_is_left_as_it_is() -> None:
    # The teacher is the student itself: no step can lower the held-out loss (0), so
    # the start is kept, untouched, after ``patience`` checks (Adam's first steps move
    # every weight by about lr whatever the gradient's size; they must not be kept).
    data, _ = _teacher_task()
    torch.manual_seed(1)
    student = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    teacher = logits_of(student, data.inputs)
    start = {n: t.clone() for n, t in student.state_dict().items()}
    done = distill_into(student, data, teacher, DistillConfig(steps=100), generator(0, "t"))
    assert done.steps == DistillConfig().patience * 5  # 300 inputs: 5 steps an epoch
    assert done.before == done.after == 1.0
    assert all(torch.equal(student.state_dict()[n], t) for n, t in start.items())


def test_early_stopping_checks_the_held_out_loss_once_per_epoch_by_default() -> None:
    cfg = DistillConfig()
    assert (cfg.check_every, cfg.patience, cfg.lr, cfg.temperature) == (None, 3, None, 1.0)
    assert (cfg.optimizer, cfg.step_scale) == ("adam", None)
    assert check_interval(cfg, 107) == 2  # digits: 107 inputs, batches of 64
    assert check_interval(cfg, 633) == 10  # MNIST: 633 inputs
    assert check_interval(cfg, 10) == 1
    assert check_interval(cfg, 107, BY_AGREEMENT) == 10
    assert check_interval(DistillConfig(check_every=4), 633, BY_AGREEMENT) == 4


def test_the_agreement_criterion_keeps_fedmd_s_digest_as_it_was() -> None:
    data, teacher = _teacher_task()
    torch.manual_seed(1)
    student = nn.Linear(8, 4)
    cfg = DistillConfig(steps=150, lr=0.05, batch_size=32, patience=5)
    done = distill_into(student, data, teacher, cfg, generator(0, "t"), criterion=BY_AGREEMENT)
    assert done.steps % 10 == 0 or done.steps == 150
    assert done.after == agreement(logits_of(student, data.val), teacher[300:]) > 0.9


def test_a_kept_student_never_agrees_less_than_the_start() -> None:
    data, teacher = _teacher_task()
    for seed in range(3):
        torch.manual_seed(seed)
        student = nn.Linear(8, 4)
        cfg = DistillConfig(steps=60, lr=0.5, batch_size=16, check_every=1, patience=4)
        done = distill_into(student, data, teacher, cfg, generator(seed, "t"))
        assert done.after >= done.before
        assert done.after == agreement(logits_of(student, data.val), teacher[300:])


def test_ensemble_aggregator_means_per_architecture_and_averages_scores() -> None:
    nets = {"a": nn.Linear(2, 2, bias=False), "b": nn.Linear(2, 2, bias=False)}
    states = {"a": {"weight": torch.eye(2)}, "b": {"weight": torch.zeros(2, 2)}}
    inputs = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    arch = {"0": "a", "1": "a", "2": "b"}
    agg = EnsembleAggregator(arch.__getitem__, states, nets, inputs)
    agg.add("0", {"weight": torch.ones(2, 2)}, {"num_examples": 1})
    agg.add("1", {"weight": 3 * torch.ones(2, 2)}, {"num_examples": 3})
    agg.add("2", {"weight": torch.eye(2)}, {"num_examples": 5})
    out = agg.result()
    assert agg.count == 3
    # a: (1 x 1 + 3 x 3) / 4 = 2.5 everywhere; b: its one update
    assert torch.equal(out["a/weight"], torch.full((2, 2), 2.5))
    assert torch.equal(out["b/weight"], torch.eye(2))
    # client models: I + 1, I + 3, I; scores x @ W^T, averaged over the three clients
    models = [torch.eye(2) + 1, torch.eye(2) + 3, torch.eye(2)]
    expected = sum(inputs @ w.T for w in models) / 3
    assert torch.allclose(out[TEACHER], expected)


def test_fedmd_consensus_is_the_unweighted_mean() -> None:
    mean = ScoreMean()
    mean.add("0", {"logits": torch.tensor([[1.0, 2.0]])}, {"num_examples": 100})
    mean.add("1", {"logits": torch.tensor([[3.0, 0.0]])}, {"num_examples": 1})
    assert torch.equal(mean.result()["logits"], torch.tensor([[2.0, 1.0]]))


@pytest.mark.parametrize("teacher", ["centered", "mean"])
def test_fedmd_next_consensus_is_the_mean_centered_or_not(teacher: str) -> None:
    strategy = FedMD(StrategyConfig(name="fedmd"))
    config = DistillConfig(teacher=teacher)  # type: ignore[arg-type]
    strategy.bind(cast(Federation, SimpleNamespace(config=config)))
    mean = torch.tensor([[2.0, 1.0], [6.0, 1.0]])
    consensus = strategy.apply({}, {"logits": mean})["logits"]
    # class means 4 and 1 over the two public examples; both spreads above 1: not sharpened
    expected = torch.tensor([[-2.0, 0.0], [2.0, 0.0]]) if teacher == "centered" else mean
    assert torch.equal(consensus, expected)


def test_fedmd_sharpens_a_soft_consensus_and_keeps_its_settings() -> None:
    strategy = FedMD(StrategyConfig(name="fedmd"))
    strategy.bind(cast(Federation, SimpleNamespace(config=DistillConfig(teacher_std=4.0))))
    previous = {"logits": torch.zeros(2, 2)}
    consensus = strategy.apply(previous, {"logits": torch.tensor([[2.0, 1.0], [6.0, 1.0]])})
    # centered [[-2, 0], [2, 0]]: std 1.633 over the 4 entries, scaled up to 4
    centered_mean = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
    assert torch.allclose(consensus["logits"], centered_mean * (4.0 / (8 / 3) ** 0.5))
    tensors, rest = strategy.state_dict()
    assert (rest["teacher"], rest["teacher_std"]) == ("centered", 4.0)
    with pytest.raises(ValueError, match="distill.teacher_std=null, this run has 4.0"):
        strategy.load_state_dict(tensors, {"ready": True, "teacher": "centered"})
    overflow = strategy.apply(previous, {"logits": torch.tensor([[3e38, 1.0], [3e38, 1.0]]) * 2})
    assert torch.equal(overflow["logits"], previous["logits"])  # the previous one is kept


def test_pack_and_unpack_round_trip_with_padding() -> None:
    state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([7.0])}
    flat = pack(state, 10)
    assert flat.shape == (10,) and torch.equal(flat[7:], torch.zeros(3))
    back = unpack(flat, state)
    assert all(torch.equal(back[n], state[n]) for n in state)
