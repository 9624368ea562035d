"""FedDF's teacher and guard: the centered teacher drops the classes every client
favours everywhere; an ensemble that predicts fewer classes than the averaged model (the
degenerate teacher of one-or-two-class clients) is not distilled into it."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from fedloom.client.client import load_into
from fedloom.client.task import classification
from fedloom.core.tensors import Tensors, clone, state_of
from fedloom.data.base import TensorData
from fedloom.distill import feddf
from fedloom.distill.config import DistillConfig
from fedloom.distill.data import Unlabeled
from fedloom.distill.ensemble import centered, classes_predicted, logits_of, sharpened
from fedloom.distill.feddf import SEP, TEACHER, FedDF
from fedloom.distill.setup import Federation
from fedloom.server.config import StrategyConfig

CLASSES = 4


def _feddf(guard: str, teacher: str, **more: Any) -> tuple[FedDF, Tensors]:
    """A one-architecture FedDF over a linear model that tells 4 classes apart."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(100, 8, generator=gen)
    torch.manual_seed(0)
    net = nn.Linear(8, CLASSES)
    with torch.no_grad():
        net.weight.copy_(torch.randn(CLASSES, 8, generator=gen) * 3)
    start = clone(state_of(net))
    fed = Federation(
        archs=["lin"],
        assignment=["lin"],
        nets={"lin": net},
        initial={"lin": start},
        unlabeled=Unlabeled(fit=x[:80], val=x[80:]),
        test=TensorData(x, torch.zeros(100, dtype=torch.long)),
        task=classification(),
        num_classes=CLASSES,
        # steps as large as the round's update (0.3 x 0.3), so that a few show
        config=DistillConfig(guard=guard, teacher=teacher, **{"step_scale": 0.3, **more}),
        seed=0,
        eval_every=1,
        rounds=1,
    )
    strategy = FedDF(StrategyConfig(name="feddf"))
    strategy.bind(fed)
    strategy.start(start)
    strategy.new_aggregator(1)
    return strategy, start


def _aggregate(start: Tensors, teacher: torch.Tensor) -> Tensors:
    """A round whose averaged update adds 0.3 to every weight (the same shift for every
    class, so the average picks the classes the start picks) and whose ensemble's class
    scores are ``teacher``."""
    update = {n: torch.full_like(t, 0.3) for n, t in start.items()}
    return {**{f"lin{SEP}{n}": t for n, t in update.items()}, TEACHER: teacher}


def _collapsed(rows: int) -> torch.Tensor:
    """Class scores that pick class 2 for every input."""
    scores = torch.zeros(rows, CLASSES)
    scores[:, 2] = 5.0
    return scores


def test_a_teacher_with_fewer_classes_leaves_the_average_as_it_is() -> None:
    strategy, start = _feddf("classes", "mean")
    averaged = {n: t + 0.3 for n, t in start.items()}
    assert (
        classes_predicted(logits_of(strategy.fed.nets["lin"], strategy.fed.unlabeled.inputs)) == 4
    )
    new = strategy.apply(start, _aggregate(start, _collapsed(100)))
    assert all(torch.equal(new[n], averaged[n]) for n in averaged)
    record = strategy.last["lin"]
    assert record["skipped"] is True
    assert (record["steps"], record["teacher_classes"], record["average_classes"]) == (0, 1, 4)
    assert record["agreement_before"] == record["agreement_after"]


def test_without_the_guard_the_same_teacher_collapses_the_student() -> None:
    strategy, start = _feddf("none", "mean")
    new = strategy.apply(start, _aggregate(start, _collapsed(100)))
    assert strategy.last["lin"]["skipped"] is False
    assert strategy.last["lin"]["steps"] > 0
    net = strategy.fed.nets["lin"]
    load_into(net, new)
    # the distilled model now picks the teacher's single class on more inputs than before
    after = logits_of(net, strategy.fed.unlabeled.val).argmax(1)
    assert strategy.last["lin"]["agreement_after"] > strategy.last["lin"]["agreement_before"]
    assert float((after == 2).float().mean()) == strategy.last["lin"]["agreement_after"]


def test_a_teacher_with_as_many_classes_is_distilled() -> None:
    strategy, start = _feddf("classes", "mean")
    gen = torch.Generator().manual_seed(1)
    teacher = torch.randn(100, CLASSES, generator=gen) * 3  # every class picked somewhere
    assert classes_predicted(teacher) == CLASSES
    strategy.apply(start, _aggregate(start, teacher))
    record = strategy.last["lin"]
    assert record["skipped"] is False
    assert record["steps"] > 0
    assert record["teacher_classes"] == record["average_classes"] == CLASSES


def _biased(inputs: torch.Tensor) -> torch.Tensor:
    """Class scores that a linear map of ``inputs`` tells apart, plus 8 for class 2 on
    every input (a prior): the plain mean picks class 2 for every input."""
    gen = torch.Generator().manual_seed(2)
    scores = inputs @ (torch.randn(inputs.shape[1], CLASSES, generator=gen) * 0.5)
    scores[:, 2] += 8.0
    return scores


def test_centered_is_the_scores_minus_their_mean_over_the_inputs() -> None:
    scores = torch.tensor([[4.0, 1.0], [6.0, 0.0], [5.0, 2.0]])
    # class means 5 and 1: the rows become [-1, 0], [1, -1], [0, 1]
    expected = torch.tensor([[-1.0, 0.0], [1.0, -1.0], [0.0, 1.0]])
    assert torch.equal(centered(scores), expected)
    assert centered(scores).argmax(1).tolist() == [1, 0, 1]  # the plain scores: all class 0
    # centering the mean of two clients' scores = the mean of their centered scores
    other = torch.tensor([[0.0, 3.0], [1.0, 1.0], [2.0, 2.0]])
    assert torch.allclose(centered((scores + other) / 2), (centered(scores) + centered(other)) / 2)


def test_a_centered_teacher_recovers_the_classes_a_prior_hides() -> None:
    plain, start = _feddf("classes", teacher="mean")
    teacher = _biased(plain.fed.unlabeled.inputs)
    assert classes_predicted(teacher) == 1
    assert classes_predicted(centered(teacher)) == CLASSES
    plain.apply(start, _aggregate(start, teacher))
    assert plain.last["lin"]["skipped"] is True  # the plain mean: one class, not distilled
    strategy, start = _feddf("classes", teacher="centered")
    strategy.apply(start, _aggregate(start, teacher))
    record = strategy.last["lin"]
    assert (record["skipped"], record["teacher_classes"]) == (False, CLASSES)
    assert record["steps"] > 0
    assert record["agreement_after"] > record["agreement_before"]


def test_the_defaults_are_the_centered_sharpened_teacher_and_the_guard() -> None:
    config = DistillConfig()
    assert (config.teacher, config.teacher_std, config.guard) == ("centered", 1.0, "classes")


def test_sharpened_scales_a_soft_teacher_up_to_the_least_spread_and_never_down() -> None:
    soft = torch.tensor([[0.5, -0.5], [-0.5, 0.5]])  # std over the 4 entries: sqrt(1/3)
    assert torch.allclose(sharpened(soft, 1.0), soft * 3**0.5)
    assert float(sharpened(soft, 2.0).std()) == pytest.approx(2.0)
    sharp = soft * 4  # std 2.31: already above 1
    assert sharpened(sharp, 1.0) is sharp
    assert sharpened(soft, None) is soft
    flat = torch.zeros(3, 2)  # nothing to sharpen
    assert torch.equal(sharpened(flat, 1.0), flat)
    rounding = torch.full((3, 2), 1e3) + torch.tensor([[1e-5, 0.0], [0.0, 0.0], [0.0, 0.0]])
    assert sharpened(rounding, 1.0) is rounding  # a spread of 4e-6 at 1e3: rounding
    one = torch.tensor([[0.5]])
    assert sharpened(one, 1.0) is one


def test_the_teacher_is_distilled_sharpened(monkeypatch: pytest.MonkeyPatch) -> None:
    strategy, start = _feddf("none", "centered", teacher_std=50.0)
    teacher = centered(_biased(strategy.fed.unlabeled.inputs))
    targets: list[torch.Tensor] = []
    real = feddf.distill_into

    def spy(net: nn.Module, data: Any, target: torch.Tensor, *args: Any, **kw: Any) -> Any:
        targets.append(target)
        return real(net, data, target, *args, **kw)

    monkeypatch.setattr(feddf, "distill_into", spy)
    strategy.apply(start, _aggregate(start, teacher))
    assert float(targets[0].std()) == pytest.approx(50.0, rel=1e-5)
    assert torch.allclose(targets[0], teacher * (50.0 / float(teacher.std())))


def test_a_teacher_that_overflows_leaves_the_average_undistilled() -> None:
    strategy, start = _feddf("none", "centered")
    teacher = _biased(strategy.fed.unlabeled.inputs)
    teacher[:2, 0] = 3e38  # finite scores whose sum over the clients overflowed
    teacher[2, 0] = float("inf")
    new = strategy.apply(start, _aggregate(start, teacher))
    assert all(torch.equal(new[n], start[n] + 0.3) for n in start)
    assert strategy.last == {}


def test_a_resumed_run_keeps_the_teacher_it_was_saved_with() -> None:
    strategy, start = _feddf("none", "centered")
    tensors, rest = strategy.state_dict()
    assert (rest["teacher"], rest["teacher_std"], rest["guard"]) == ("centered", 1.0, "none")
    strategy.load_state_dict(tensors, rest)  # the same settings: resumes
    older = {"round": rest["round"]}  # from before the keys: mean, unsharpened, classes
    with pytest.raises(ValueError, match="distill.teacher=mean, this run has centered"):
        strategy.load_state_dict(tensors, older)
    other, _ = _feddf("classes", "mean", teacher_std=None)
    other.load_state_dict(tensors, older)
    with pytest.raises(ValueError, match="distill.teacher_std=1.0, this run has null"):
        other.load_state_dict(tensors, rest | {"teacher": "mean"})
    with pytest.raises(ValueError, match="distill.guard=none, this run has classes"):
        other.load_state_dict(tensors, rest | {"teacher": "mean", "teacher_std": None})
