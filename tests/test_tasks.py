"""The open API: tasks other than classification, the user's own loss, optimizer, train
step and metrics, models returning ``.logits``, natural splits, and no side effects."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_digits
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import Dataset, TensorDataset

import fedloom
from fedloom.client.evaluate import evaluate_task
from fedloom.client.task import regression
from fedloom.core.errors import ConfigError, DataError
from fedloom.data.base import TensorData

SMALL = {"rounds": 3, "clients.num": 4, "clients.per_round": 4, "train.lr": 0.05}


def _digits() -> tuple[TensorDataset, TensorDataset]:
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(y)
    return TensorDataset(x[:1400], y[:1400]), TensorDataset(x[1400:], y[1400:])


def test_regression_recovers_a_linear_map_and_reports_mse_mae_r2(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(5, generator=gen)
    x = torch.randn(800, 5, generator=gen)
    y = x @ w + 0.1 * torch.randn(800, generator=gen)
    train, test = TensorDataset(x[:600], y[:600]), TensorDataset(x[600:], y[600:])
    config = {**SMALL, "task.name": "regression", "rounds": 5, "output_dir": str(tmp_path)}
    result = fedloom.federate(nn.Linear(5, 1), train, test, config)
    last = result.metrics[-1]
    assert {"test_mse", "test_mae", "test_r2", "test_loss"} <= set(last)
    assert "test_accuracy" not in last
    assert last["test_mse"] < 0.05 and last["test_r2"] > 0.98  # noise variance is 0.01
    assert result.summary["final_test_mse"] == last["test_mse"]
    assert result.summary["best_test_mse"] == min(m["test_mse"] for m in result.metrics)
    assert not (tmp_path / "partition.csv").exists()  # no labels to count
    with pytest.raises(DataError, match="data.partition=dirichlet splits by class label"):
        fedloom.federate(nn.Linear(5, 1), train, test, {**config, "data.partition": "dirichlet"})


def test_regression_metrics_match_a_hand_computation() -> None:
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    y = torch.tensor([1.0, 2.0, 2.0, 5.0])
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(1.0)  # predicts 1, 2, 3, 4: errors 0, 0, 1, -1
    values = evaluate_task(model, TensorData(x, y), regression(), batch_size=3)
    assert values["mse"] == pytest.approx(0.5) and values["mae"] == pytest.approx(0.5)
    var = float(((y - y.mean()) ** 2).mean())  # 2.25
    assert values["r2"] == pytest.approx(1 - 0.5 / var)
    assert values["loss"] == pytest.approx(0.5) and set(values) == {"mse", "mae", "loss", "r2"}


@dataclass
class LMOutput:
    logits: Tensor


class TinyLM(nn.Module):
    """Token ids in, an object with ``.logits`` out (the Hugging Face convention)."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 16)
        self.head = nn.Linear(16, vocab)

    def forward(self, tokens: Tensor) -> LMOutput:
        return LMOutput(self.head(self.embed(tokens)))


def test_a_token_language_model_with_a_custom_loss(tmp_path: Path) -> None:
    vocab, length = 8, 12
    gen = torch.Generator().manual_seed(1)
    starts = torch.randint(0, vocab, (400, 1), generator=gen)
    seq = (starts + torch.arange(length + 1)) % vocab  # next token = token + 1 (mod V)
    data = TensorDataset(seq[:, :-1], seq[:, 1:])
    calls = []

    def smoothed(output: Tensor, target: Tensor) -> Tensor:
        calls.append(1)
        flat = output.reshape(-1, output.shape[-1])
        return F.cross_entropy(flat, target.reshape(-1), label_smoothing=0.05)

    config = {
        **SMALL,
        "task.name": "language_model",
        "train.lr": 0.5,
        "output_dir": str(tmp_path),
    }
    result = fedloom.federate(TinyLM(vocab), data, data, config, loss=smoothed)
    last = result.metrics[-1]
    assert calls and last["test_perplexity"] < 1.5  # uniform guessing would be 8
    assert last["test_perplexity"] == pytest.approx(math.exp(last["test_loss"]))
    assert result.summary["task"] == "language_model"
    assert fedloom.load_config(tmp_path / "config.yaml").task.custom == ["loss"]
    with pytest.raises(ConfigError, match="loss=..."):
        fedloom.resume(tmp_path, ["rounds=4"])


class ViewCNN(nn.Module):
    """A user's convolutional model that flattens with ``.view`` (Opacus' MNIST style) and
    returns a dict with ``logits``: channels-last evaluation would break it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = F.relu(self.conv(x))
        return {"logits": self.fc(h.view(h.size(0), -1))}


def test_user_models_with_view_and_dict_outputs_train_and_are_left_untouched(
    tmp_path: Path,
) -> None:
    train, test = _digits()
    model = ViewCNN()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = fedloom.federate(model, train, test, {**SMALL, "output_dir": str(tmp_path)})
    assert result.summary["final_test_accuracy"] > 0.85
    assert result.model is not model
    for key, value in model.state_dict().items():  # the user's model did not move
        assert torch.equal(value, before[key])


def test_natural_splits_a_custom_optimizer_and_metric(tmp_path: Path) -> None:
    train, test = _digits()
    x, y = train.tensors
    sites: dict[str, Dataset[object]] = {  # three hospitals of different sizes
        "a": TensorDataset(x[:200], y[:200]),
        "b": TensorDataset(x[200:700], y[200:700]),
        "c": TensorDataset(x[700:], y[700:]),
    }

    def top2(output: Tensor, target: Tensor) -> float:
        best = output.topk(2, dim=-1).indices
        return float((best == target[:, None]).any(-1).double().mean())

    adam = []

    def optimizer(params: list[nn.Parameter]) -> torch.optim.Optimizer:
        adam.append(1)
        return torch.optim.Adam(params, lr=0.01)

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    config = {"rounds": 5, "output_dir": str(tmp_path)}
    result = fedloom.federate(
        model,
        test=test,
        config=config,
        client_data=sites,
        metrics={"top2": top2},
        optimizer=optimizer,
    )
    last = result.metrics[-1]
    assert last["num_clients"] == 3 and len(adam) == 3 * 5
    assert last["test_top2"] >= last["test_accuracy"] > 0.8
    with pytest.raises(ConfigError, match="exactly one of train= and client_data="):
        fedloom.federate(model, train, test, client_data=sites)


def test_dpsgd_trains_with_the_users_loss_and_refuses_a_train_step(tmp_path: Path) -> None:
    train, test = _digits()
    calls = []

    def loss(output: Tensor, target: Tensor) -> Tensor:
        calls.append(len(target))
        return F.cross_entropy(output, target)  # a mean over the batch, as DP-SGD needs

    config = {
        **SMALL,
        "rounds": 2,
        "privacy.mode": "dpsgd",
        "privacy.noise_multiplier": 1.0,
        "output_dir": str(tmp_path / "dp"),
    }
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    result = fedloom.federate(model, train, test, config, loss=loss)
    assert calls and result.metrics[-1]["epsilon"] > 0
    assert result.summary["final_test_accuracy"] > 0.5

    def step(net: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        return F.cross_entropy(net(batch[0]), batch[1])

    config["output_dir"] = str(tmp_path / "step")
    with pytest.raises(ConfigError, match="train_step"):
        fedloom.federate(model, train, test, config, train_step=step)
    plain = {**config, "privacy.mode": "none", "privacy.noise_multiplier": None}
    assert fedloom.federate(model, train, test, plain, train_step=step).metrics


def test_augmentation_is_applied_to_training_batches_and_stays_reproducible(
    tmp_path: Path,
) -> None:
    train, test = _digits()
    seen: list[int] = []

    def shift(x: Tensor, gen: torch.Generator) -> Tensor:
        seen.append(len(x))
        noise = torch.randn(x.shape, generator=gen) * 0.05
        return torch.roll(x, shifts=int(torch.randint(-1, 2, (1,), generator=gen)), dims=-1) + noise

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    runs = [
        fedloom.federate(model, train, test, {**SMALL, "output_dir": str(tmp_path / name)}, **kw)
        for name, kw in (("a", {"augment": shift}), ("b", {"augment": shift}), ("c", {}))
    ]
    a, b, c = (dict(r.model.state_dict()) for r in runs)
    assert seen and sum(seen) == 2 * 3 * 1400  # every training example, both runs, 3 rounds
    assert all(torch.equal(a[k], b[k]) for k in a)  # seeded per client and round
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert runs[0].summary["final_test_accuracy"] > 0.7  # 0.79 measured


def test_compute_device_and_threads(tmp_path: Path) -> None:
    import torch as t

    from fedloom.config import load_config
    from fedloom.experiment import Experiment

    base = ["model.name=logreg", "clients.num=4", "clients.per_round=4", "rounds=2"]
    runs = {}
    for device in ("cpu", "auto"):
        cfg = load_config(
            None, [*base, f"compute.device={device}", f"output_dir={tmp_path / device}"]
        )
        runs[device] = Experiment(cfg).run()
    if not t.cuda.is_available():  # auto is the CPU here: the same run, bit for bit
        assert runs["auto"].metrics[-1]["test_loss"] == runs["cpu"].metrics[-1]["test_loss"]
        with pytest.raises(ConfigError, match="compute.device=cuda: this machine has 0"):
            Experiment(load_config(None, [*base, "compute.device=cuda"]))
    with pytest.raises(ConfigError, match="compute.device=cuda.*strategy.name=scaffold"):
        load_config(None, [*base, "compute.device=cuda", "strategy.name=scaffold"])
    with pytest.raises(ConfigError, match="compute.device"):
        load_config(None, [*base, "compute.device=tpu"])
    before = t.get_num_threads()
    try:
        Experiment(load_config(None, [*base, "compute.threads=1", f"output_dir={tmp_path / 't'}"]))
        assert t.get_num_threads() == 1
    finally:
        t.set_num_threads(before)


def test_lora_returns_a_merged_copy_or_the_adapters_and_never_touches_the_users_model(
    tmp_path: Path,
) -> None:
    train, test = _digits()
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    keys = set(model.state_dict())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lora = {**SMALL, "finetune.mode": "lora", "finetune.names": ["3.*"]}
    merged = fedloom.federate(model, train, test, {**lora, "output_dir": str(tmp_path / "m")})
    kept = fedloom.federate(
        model,
        train,
        test,
        {**lora, "finetune.lora_merge": False, "output_dir": str(tmp_path / "k")},
    )
    assert set(merged.model.state_dict()) == keys  # the user's architecture, adapters merged
    assert any("lora" in k for k in kept.model.state_dict())
    assert set(model.state_dict()) == keys and all(
        torch.equal(v, before[k]) for k, v in model.state_dict().items()
    )
    x = test.tensors[0][:50]
    merged.model.eval(), kept.model.eval()
    with torch.no_grad():  # the same function either way
        assert torch.allclose(merged.model(x), kept.model(x), atol=1e-5)


def test_float_labels_for_classification_are_one_line_and_fraction_works_with_sites(
    tmp_path: Path,
) -> None:
    x = torch.randn(60, 4)
    floats = TensorDataset(x, (x[:, 0] > 0).float())
    with pytest.raises(DataError, match="call y.long\\(\\), or set task.name=regression"):
        fedloom.federate(nn.Linear(4, 2), floats, floats, {"output_dir": str(tmp_path / "f")})
    labels = (x[:, 0] > 0).long()
    sites = {k: TensorDataset(x[i::4], labels[i::4]) for k, i in zip("abcd", range(4), strict=True)}
    config = {"clients.fraction": 0.5, "rounds": 1, "output_dir": str(tmp_path / "s")}
    test = TensorDataset(x, labels)
    result = fedloom.federate(nn.Linear(4, 2), test=test, config=config, client_data=sites)
    assert result.metrics[0]["num_clients"] == 2
