import pytest
import torch

from fedloom.server.aggregate import WeightedSum, weighted_mean
from fedloom.server.strategy import StrategyConfig, build_strategy


def test_weighted_mean_by_hand():
    # n = 10, 30, 60: weights 0.1, 0.3, 0.6
    updates = [
        ({"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0])}, 10),
        ({"w": torch.tensor([3.0, -2.0]), "b": torch.tensor([1.0])}, 30),
        ({"w": torch.tensor([-1.0, 4.0]), "b": torch.tensor([2.0])}, 60),
    ]
    mean = weighted_mean(updates)
    # w0 = 0.1*1 + 0.3*3 + 0.6*(-1) = 0.4 ; w1 = 0.2 - 0.6 + 2.4 = 2.0 ; b = 0.3 + 1.2 = 1.5
    assert torch.allclose(mean["w"], torch.tensor([0.4, 2.0]))
    assert torch.allclose(mean["b"], torch.tensor([1.5]))


def test_weighted_sum_rejects_empty_and_negative():
    acc = WeightedSum()
    with pytest.raises(ValueError):
        acc.mean()
    with pytest.raises(ValueError):
        acc.add({"w": torch.ones(1)}, -1.0)


def test_fedavg_server_step_is_the_weighted_mean_of_client_models():
    global_w = {"w": torch.tensor([1.0, 1.0, 1.0])}
    clients = [(torch.tensor([2.0, 0.0, 1.0]), 1), (torch.tensor([0.0, 4.0, 1.0]), 3)]
    strategy = build_strategy(StrategyConfig())
    strategy.start(global_w)
    agg = strategy.new_aggregator(1)
    for k, (w, n) in enumerate(clients):
        agg.add(str(k), {"w": w - global_w["w"]}, {"num_examples": n})
    new = strategy.apply(global_w, agg.result())
    # FedAvg: sum n_k/n * w_k = 0.25*[2,0,1] + 0.75*[0,4,1] = [0.5, 3.0, 1.0]
    assert torch.allclose(new["w"], torch.tensor([0.5, 3.0, 1.0]), atol=1e-7)


def test_fedavgm_keeps_momentum_across_rounds_and_in_its_state():
    cfg = StrategyConfig(name="fedavgm", server_lr=1.0, server_momentum=0.5)
    strategy = build_strategy(cfg)
    w = {"w": torch.tensor([0.0])}
    strategy.start(w)
    w = strategy.apply(w, {"w": torch.tensor([1.0])})  # v = -1 ; w = 0 - (-1) = 1
    w = strategy.apply(w, {"w": torch.tensor([1.0])})  # v = 0.5*-1 - 1 = -1.5 ; w = 2.5
    assert torch.allclose(w["w"], torch.tensor([2.5]))
    tensors, rest = strategy.state_dict()
    clone = build_strategy(cfg)
    clone.start(w)
    clone.load_state_dict(tensors, rest)
    a = strategy.apply(w, {"w": torch.tensor([1.0])})
    b = clone.apply(w, {"w": torch.tensor([1.0])})
    assert torch.equal(a["w"], b["w"])  # v = -1.75 ; w = 4.25
    assert torch.allclose(a["w"], torch.tensor([4.25]))
