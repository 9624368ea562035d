"""SCAFFOLD's control variates: the option II formulas, the server side, and one real client."""

import pytest
import torch
from torch import nn

import fedloom.features  # noqa: F401  (registers the strategies)
from fedloom.algorithms.scaffold import (
    ScaffoldStrategy,
    client_control_update,
    control_variate_hook,
    drift_correction,
    server_control_update,
)
from fedloom.client.client import Client
from fedloom.client.trainer import LocalTrainer, TrainConfig
from fedloom.compression.codec import RawCodec
from fedloom.core.message import Message
from fedloom.core.tensors import state_of
from fedloom.data.base import TensorData
from fedloom.server.strategy import StrategyConfig, build_strategy

T = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731


def test_option_two_client_update():
    # c_i = 1, c = 0.5, y - x = -0.6 after K = 3 steps of η = 0.1: c_i+ = 1 - 0.5 + 0.6/0.3 = 2.5
    new, dc = client_control_update(T(1.0), T(0.5), T(-0.6), 3, 0.1)
    assert new.item() == pytest.approx(2.5)
    assert dc.item() == pytest.approx(1.5)


def test_server_control_update_scales_by_participation():
    # c = 0.2, Σ n_i Δc_i = 2.0 from clients of a federation of 80 examples
    assert server_control_update(T(0.2), T(2.0), 80.0).item() == pytest.approx(0.225)


def test_dc_is_weighted_by_share_of_all_examples_and_never_robustly_aggregated():
    # Δc 1 and 3 from clients of 1 and 3 examples in a federation of 8 examples:
    # c = (1·1 + 3·3) / 8; a norm bound on the model update never touches Δc
    for rule in ("mean", "norm_bound"):
        strategy = build_strategy(StrategyConfig(name="scaffold", aggregator=rule, norm_bound=1.0))
        strategy.population_examples = 8.0
        x = {"w": T(0.0, 0.0)}
        strategy.start(x)
        agg = strategy.new_aggregator(1)
        agg.add("a", {"w": T(0.6, 0.8), "aux/scaffold_dc/w": T(1.0, 0.0)}, {"num_examples": 1})
        agg.add("b", {"w": T(0.6, 0.8), "aux/scaffold_dc/w": T(3.0, 0.0)}, {"num_examples": 3})
        new = strategy.apply(x, agg.result())
        assert new["w"].tolist() == pytest.approx([0.6, 0.8])  # norm 1: inside the bound
        assert strategy.downlink_extras()["aux/scaffold_c/w"].tolist() == pytest.approx([1.25, 0])


def test_strategy_sends_c_expects_dc_and_checkpoints_c():
    strategy = build_strategy(StrategyConfig(name="scaffold", server_lr=1.0))
    assert isinstance(strategy, ScaffoldStrategy)
    strategy.population_examples = 20.0  # 4 clients of 5 examples
    x = {"w": T(1.0, 2.0)}
    strategy.start(x)
    assert set(strategy.update_extras(x)) == {"aux/scaffold_dc/w"}
    agg = strategy.new_aggregator(1)
    for dw, dc in ((T(0.2, 0.0), T(1.0, -1.0)), (T(0.4, 0.2), T(3.0, 1.0))):
        agg.add("k", {"w": dw, "aux/scaffold_dc/w": dc}, {"num_examples": 5})
    new = strategy.apply(x, agg.result())
    assert new["w"].tolist() == pytest.approx([1.3, 2.1])
    # Σ n_i Δc_i = 5·(4, 0), 20 examples in all: c = (20, 0) / 20
    assert strategy.downlink_extras()["aux/scaffold_c/w"].tolist() == pytest.approx([1.0, 0.0])
    tensors, rest = strategy.state_dict()
    other = build_strategy(StrategyConfig(name="scaffold"))
    other.start(x)
    other.load_state_dict(tensors, rest)
    assert torch.equal(other.downlink_extras()["aux/scaffold_c/w"], T(1.0, 0.0))


def test_client_corrects_gradients_and_reports_dc():
    # one full-batch step of plain SGD on a linear model, c = 1 everywhere, c_i = 0
    torch.manual_seed(0)
    data = TensorData(torch.randn(8, 3), torch.tensor([0, 1, 0, 1, 1, 0, 0, 1]))
    model = nn.Linear(3, 2)
    x = {n: t.clone() for n, t in state_of(model).items()}
    lr = 0.1
    trainer = LocalTrainer(TrainConfig(local_steps=1, batch_size=None, lr=lr, momentum=0.0))
    trainer.grad_hooks.append(drift_correction)
    client = Client(
        "0",
        data,
        model,
        trainer,
        seed=0,
        down=RawCodec(),
        up=RawCodec(),
        hooks=[control_variate_hook(lr)],
    )
    c = {f"aux/scaffold_c/{n}": torch.ones_like(t) for n, t in x.items()}
    reply = client.handle(Message("fit", 1, "server", RawCodec().encode({**x, **c})))
    update = RawCodec().decode(reply.payload)
    # the plain gradient, for reference
    ref = nn.Linear(3, 2)
    ref.load_state_dict(x)
    nn.functional.cross_entropy(ref(data.x), data.y).backward()
    for name, p in ref.named_parameters():
        # y - x = -η (g + c - c_i) = -η (g + 1)
        assert torch.allclose(update[name], -lr * (p.grad + 1), atol=1e-6)
        # c_i+ = 0 - 1 + η(g + 1)/η = g, so Δc = g
        assert torch.allclose(update[f"aux/scaffold_dc/{name}"], p.grad, atol=1e-5)
        assert torch.allclose(client.state[f"scaffold_ci/{name}"], p.grad, atol=1e-5)


def test_weight_decay_is_refused_at_config_time_where_steps_are_normalized():
    from fedloom.config import load_config
    from fedloom.core.errors import ConfigError

    for name in ("scaffold", "fednova"):
        with pytest.raises(ConfigError, match=f"train.weight_decay: strategy.name={name}"):
            load_config(None, [f"strategy.name={name}", "train.weight_decay=0.01"])
