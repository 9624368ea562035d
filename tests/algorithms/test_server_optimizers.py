"""Adaptive server steps against Reddi et al. 2021, Algorithm 2, computed by hand."""

import math

import pytest
import torch

import fedloom.features  # noqa: F401  (registers the strategies)
from fedloom.algorithms.optimizers import FedAdamOptimizer
from fedloom.core.errors import ConfigError
from fedloom.server.strategy import StrategyConfig, build_strategy

X0 = {"w": torch.tensor([1.0, -2.0], dtype=torch.float64)}
ETA, B1, B2, TAU = 0.1, 0.9, 0.99, 0.1


def step(name: str, deltas: list[list[float]]) -> torch.Tensor:
    cfg = StrategyConfig(name=name, server_lr=ETA, beta1=B1, beta2=B2, tau=TAU)
    strategy = build_strategy(cfg)
    strategy.start(X0)
    state = X0
    for d in deltas:
        state = strategy.apply(state, {"w": torch.tensor(d, dtype=torch.float64)})
    return state["w"]


def test_fedadam_one_step():
    # Δ = (0.5, 0): m = 0.1·0.5 = 0.05, v = 0.99·τ² + 0.01·0.25 = 0.0124
    w = step("fedadam", [[0.5, 0.0]])
    assert w[0].item() == pytest.approx(1.0 + 0.1 * 0.05 / (math.sqrt(0.0124) + 0.1), abs=1e-12)
    # zero pseudo-gradient: m = 0, the coordinate does not move
    assert w[1].item() == -2.0


def test_fedadam_two_steps_keep_momentum_without_bias_correction():
    w = step("fedadam", [[0.5, 0.0], [-0.2, 0.0]])
    x1 = 1.0 + 0.1 * 0.05 / (math.sqrt(0.0124) + 0.1)
    m2 = 0.9 * 0.05 + 0.1 * -0.2  # = 0.025
    v2 = 0.99 * 0.0124 + 0.01 * 0.04  # = 0.012676
    assert w[0].item() == pytest.approx(x1 + 0.1 * m2 / (math.sqrt(v2) + 0.1), abs=1e-12)


def test_fedyogi_one_step():
    # v0 = τ² = 0.01 < g² = 0.25, so sign = -1 and v = 0.01 + 0.01·0.25 = 0.0125
    w = step("fedyogi", [[0.5, 0.0]])
    assert w[0].item() == pytest.approx(1.0 + 0.1 * 0.05 / (math.sqrt(0.0125) + 0.1), abs=1e-12)


def test_fedyogi_shrinks_v_towards_small_gradients():
    # step 1: v = 0.0125; step 2 with g² = 0.0001 < v: v = 0.0125 - 0.01·0.0001
    w = step("fedyogi", [[0.5, 0.0], [0.01, 0.0]])
    x1 = 1.0 + 0.1 * 0.05 / (math.sqrt(0.0125) + 0.1)
    m2 = 0.9 * 0.05 + 0.1 * 0.01
    v2 = 0.0125 - 0.01 * 0.0001
    assert w[0].item() == pytest.approx(x1 + 0.1 * m2 / (math.sqrt(v2) + 0.1), abs=1e-12)


def test_fedadagrad_one_step():
    # v = τ² + g² = 0.26
    w = step("fedadagrad", [[0.5, 0.0]])
    assert w[0].item() == pytest.approx(1.0 + 0.1 * 0.05 / (math.sqrt(0.26) + 0.1), abs=1e-12)


@pytest.mark.parametrize("name", ["fedprox", "fednova"])
def test_sgd_server_step_is_global_plus_lr_times_delta(name):
    cfg = StrategyConfig(name=name, server_lr=0.5)
    strategy = build_strategy(cfg)
    strategy.start(X0)
    delta = {"w": torch.tensor([0.4, -1.0], dtype=torch.float64)}
    w = strategy.apply(X0, delta)["w"]
    assert w.tolist() == pytest.approx([1.2, -2.5])


def test_adaptive_state_survives_a_checkpoint_round_trip():
    cfg = StrategyConfig(name="fedadam", server_lr=ETA, tau=TAU)
    a, b = build_strategy(cfg), build_strategy(cfg)
    a.start(X0)
    b.start(X0)
    d1 = {"w": torch.tensor([0.5, 0.1], dtype=torch.float64)}
    d2 = {"w": torch.tensor([-0.3, 0.2], dtype=torch.float64)}
    x1 = a.apply(X0, d1)
    tensors, rest = a.state_dict()
    b.load_state_dict(tensors, rest)
    assert torch.equal(a.apply(x1, d2)["w"], b.apply(x1, d2)["w"])


def test_bad_hyperparameters_are_config_errors():
    with pytest.raises(ConfigError, match="tau"):
        FedAdamOptimizer([torch.nn.Parameter(torch.zeros(1))], lr=0.1, tau=0.0)
    with pytest.raises(ConfigError, match="strategy.name"):
        build_strategy(StrategyConfig.model_construct(name="nope"))  # type: ignore[arg-type]
