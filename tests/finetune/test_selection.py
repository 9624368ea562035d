"""Which parameters train in each finetune.mode, and their errors."""

import pytest
import torch

from fedloom.config import load_config
from fedloom.core.errors import ConfigError
from fedloom.data.base import TensorData
from fedloom.finetune.importance import (
    aggregate_scores,
    select_by_budget,
    tensor_scores,
    weight_scores,
)
from fedloom.finetune.select import SELECTORS, parameterised_layers
from fedloom.models.zoo import CNN


class _Parts:
    """Just what the selectors read."""

    def __init__(self, overrides):
        torch.manual_seed(0)
        self.config = load_config(None, overrides)
        self.model = CNN((1, 8, 8), 10)
        self.notes = {}
        gen = torch.Generator().manual_seed(0)
        self.client_data = lambda k: TensorData(
            torch.rand(20, 1, 8, 8, generator=gen), torch.randint(0, 10, (20,), generator=gen)
        )


def _select(*overrides) -> set:
    parts = _Parts(["clients.num=2", "clients.per_round=2", *overrides])
    return SELECTORS[parts.config.finetune.mode](parts)  # type: ignore[arg-type]


def test_names_and_last_k():
    assert _select("finetune.mode=names", "finetune.names=['fc2.*']") == {"fc2.weight", "fc2.bias"}
    assert _select("finetune.mode=names", "finetune.names=['*.bias']") == {
        "conv1.bias",
        "conv2.bias",
        "fc1.bias",
        "fc2.bias",
    }
    assert parameterised_layers(CNN((1, 8, 8), 10)) == ["conv1", "conv2", "fc1", "fc2"]
    assert _select("finetune.mode=last_k", "finetune.last_k=2") == {
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
    }


def test_selection_errors_name_the_problem():
    with pytest.raises(ConfigError, match="'head.*' matches no parameter"):
        _select("finetune.mode=names", "finetune.names=['head.*']")
    with pytest.raises(ConfigError, match="at least one glob"):
        _select("finetune.mode=names")
    with pytest.raises(ConfigError, match="exceeds the model's 4 layers"):
        _select("finetune.mode=last_k", "finetune.last_k=5")
    with pytest.raises(ConfigError, match="finetune.mode"):
        load_config(None, ["finetune.mode=adapters"])


def test_budgeted_selection_by_hand():
    scores = {"a": 0.9, "b": 0.5, "c": 0.7, "d": 0.1}
    sizes = {"a": 50, "b": 10, "c": 30, "d": 10}  # 100 parameters
    assert select_by_budget(scores, sizes, 0.6) == {"a", "b"}  # a (50), c no (80), b (60)
    assert select_by_budget(scores, sizes, 0.9) == {"a", "c", "b"}
    assert select_by_budget(scores, sizes, 0.01) == {"a"}  # always the top tensor
    reports = [({"a": 1.0, "b": 0.0}, 3), ({"a": 0.0, "b": 2.0}, 1)]
    assert aggregate_scores(reports) == {"a": 0.75, "b": 0.5}


def test_importance_scores_are_mean_abs_gradients():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.zero_()
    data = TensorData(torch.tensor([[1.0, -2.0]]), torch.tensor([0]))
    # zero logits: softmax 1/2 each; dL/dW = (p - onehot) x^T = [[-.5, 1], [.5, -1]]
    assert tensor_scores(model, data, 10) == {"0.weight": pytest.approx(0.75)}


def test_importance_mode_respects_the_budget():
    chosen = _select("finetune.mode=importance", "finetune.fraction=0.1")
    sizes = {n: p.numel() for n, p in CNN((1, 8, 8), 10).named_parameters()}
    assert 0 < sum(sizes[n] for n in chosen) <= 0.1 * sum(sizes.values())


def test_importance_from_weights_is_mean_abs_weight_and_reads_no_data():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -3.0], [0.0, 2.0]]))
        model[0].bias.copy_(torch.tensor([0.5, -0.5]))
        model[1].weight.copy_(torch.tensor([[4.0, -4.0]]))
    assert weight_scores(model) == {"0.weight": 1.5, "0.bias": 0.5, "1.weight": 4.0}
    parts = _Parts(["finetune.mode=importance", "finetune.importance_source=weights"])
    parts.client_data = None  # no data to read
    chosen = SELECTORS["importance"](parts)  # type: ignore[arg-type]
    assert set(parts.notes["finetune_importance"]) == chosen


def test_importance_on_client_data_is_refused_under_dp():
    with pytest.raises(ConfigError, match=r"finetune.mode=importance with privacy.mode=local"):
        _select("finetune.mode=importance", "privacy.mode=local", "privacy.noise_multiplier=1.0")


def test_lora_trains_adapters_and_the_layers_named_in_full():
    adapters = {f"{layer}.lora_{ab}" for layer in ("conv1", "conv2", "fc1") for ab in "ab"}
    assert _select("finetune.mode=lora", "finetune.names=['fc2.*']") == adapters | {
        "fc2.weight",
        "fc2.bias",
    }
    assert _select("finetune.mode=lora") == adapters | {"fc2.lora_a", "fc2.lora_b"}


def test_floating_buffers_travel_with_the_trained_part(tmp_path) -> None:
    from torch import nn

    from fedloom.config import nest
    from fedloom.data.federated import federate_tensors
    from fedloom.experiment import Experiment

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.Linear(16, 10))
    data = TensorData(torch.rand(200, 1, 8, 8), torch.randint(0, 10, (200,)))
    config = load_config(
        None,
        base=nest(
            {
                "model.name": "custom",
                "clients.num": 4,
                "clients.per_round": 4,
                "rounds": 1,
                "finetune.mode": "names",
                "finetune.names": ["3.*"],
                "output_dir": str(tmp_path / "bn"),
            }
        ),
    )
    fed = federate_tensors(data, data, 4, config.data, 0)
    exp = Experiment(config, model=model, data=fed)
    # the head trains; BatchNorm's running statistics travel; its affine weights stay frozen
    assert set(exp.server.global_state) == {"3.weight", "3.bias", "2.running_mean", "2.running_var"}
    pretrained = {n: t.clone() for n, t in model.state_dict().items()}
    exp.run()
    final = exp.server.global_state
    assert not torch.equal(final["2.running_mean"], pretrained["2.running_mean"])
    assert torch.equal(model.state_dict()["2.weight"], pretrained["2.weight"])
