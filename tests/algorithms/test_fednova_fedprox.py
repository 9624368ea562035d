"""FedNova's normalized average and FedProx's proximal term, by hand."""

import pytest
import torch
from torch import nn

from fedloom.algorithms.fednova import NormalizedAverage, step_normalizer
from fedloom.algorithms.fedprox import proximal_term
from fedloom.client.context import FitContext
from fedloom.core.errors import ConfigError, UpdateRejected


def test_fednova_normalizes_by_steps():
    agg = NormalizedAverage()
    agg.add("a", {"w": torch.tensor([1.0])}, {"num_examples": 10, "steps": 1})
    agg.add("b", {"w": torch.tensor([2.0])}, {"num_examples": 30, "steps": 4})
    # p = (1/4, 3/4); Σ p Δ/a = 0.25 + 0.375 = 0.625; τ_eff = 0.25 + 3 = 3.25
    assert agg.count == 2
    assert agg.result()["w"].item() == pytest.approx(0.625 * 3.25)


def test_fednova_equals_fedavg_when_steps_are_equal():
    agg = NormalizedAverage()
    agg.add("a", {"w": torch.tensor([1.0])}, {"num_examples": 10, "steps": 5})
    agg.add("b", {"w": torch.tensor([2.0])}, {"num_examples": 30, "steps": 5})
    assert agg.result()["w"].item() == pytest.approx(1.75)


def test_momentum_normalizer():
    # Σ_{t=1..3} (1 - 0.5^t) / 0.5 = (0.5 + 0.75 + 0.875) / 0.5
    assert step_normalizer(3, 0.5) == pytest.approx(4.25)
    assert step_normalizer(7, 0.0) == 7.0


def test_fednova_rejects_a_missing_or_bad_step_count():
    agg = NormalizedAverage()
    with pytest.raises(UpdateRejected, match="step count"):
        agg.add("a", {"w": torch.tensor([1.0])}, {"num_examples": 10})
    with pytest.raises(UpdateRejected, match="step count"):
        agg.add("a", {"w": torch.tensor([1.0])}, {"num_examples": 10, "steps": 0})
    assert agg.count == 0


def test_proximal_term_value_and_gradient():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 3.0]]))
    anchor = {"weight": torch.tensor([[0.0, 1.0]])}
    ctx = FitContext("0", 1, {}, anchor, {}, 0)
    value = proximal_term(0.5)(model, ctx)
    # 0.5/2 · (1² + 2²) = 1.25; gradient μ (w - w_g) = (0.5, 1.0)
    assert value.item() == pytest.approx(1.25)
    value.backward()
    assert model.weight.grad.tolist() == [[0.5, 1.0]]
    with pytest.raises(ConfigError):
        proximal_term(-1.0)
