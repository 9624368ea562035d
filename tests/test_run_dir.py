"""The run directory: a fresh run never mixes with an old one; --overwrite clears it safely."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import TensorDataset
from typer.testing import CliRunner

import fedloom
from fedloom.cli import app
from fedloom.config import load_config
from fedloom.core.errors import ConfigError
from fedloom.experiment import Experiment
from fedloom.report.metrics import read_metrics
from fedloom.rundir import claim_run_dir

TINY = [
    "model.name=logreg",
    "clients.num=2",
    "clients.per_round=2",
    "train.local_epochs=1",
    "train.batch_size=32",
]


def _rounds(run_dir: Path) -> list[int]:
    return [m["round"] for m in read_metrics(run_dir / "metrics.jsonl")]


def _cli(*args: str):
    return CliRunner(env={"COLUMNS": "1000"}).invoke(app, list(args))  # no line wrapping


def test_cli_run_refuses_a_non_empty_output_dir_and_overwrite_starts_afresh(tmp_path):
    out = tmp_path / "run"
    assert _cli("run", *TINY, "rounds=2", f"output_dir={out}").exit_code == 0
    before = (out / "metrics.jsonl").read_text()

    again = _cli("run", *TINY, "rounds=1", f"output_dir={out}")
    assert again.exit_code == 2
    assert f"output_dir {out} is not empty" in again.output and "--overwrite" in again.output
    assert (out / "metrics.jsonl").read_text() == before  # untouched

    (out / "stale.txt").write_text("from an older run")
    fresh = _cli("run", "--overwrite", *TINY, "rounds=1", f"output_dir={out}")
    assert fresh.exit_code == 0, fresh.output
    assert _rounds(out) == [1]  # not [1, 2, 1]: the old metrics were cleared
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "summary.json").read_text())["rounds"] == 1


def test_experiment_run_refuses_a_non_empty_run_dir_unless_overwrite(tmp_path):
    cfg = load_config(None, [*TINY, "rounds=1", f"output_dir={tmp_path / 'r'}"])
    Experiment(cfg).run()
    with pytest.raises(ConfigError, match="is not empty"):
        Experiment(cfg).run()
    assert _rounds(tmp_path / "r") == [1]
    result = Experiment(cfg).run(overwrite=True)
    assert _rounds(result.run_dir) == [1] and len(result.metrics) == 1


def test_a_fresh_auto_named_run_dir_is_unaffected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, [*TINY, "rounds=1"])
    first, second = Experiment(cfg).run(), Experiment(cfg).run()
    assert first.run_dir != second.run_dir
    assert _rounds(first.run_dir) == _rounds(second.run_dir) == [1]


def test_the_configs_own_inputs_may_live_in_output_dir_and_survive_overwrite(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    weights = {"1.weight": torch.zeros(10, 64), "1.bias": torch.zeros(10)}
    save_file(weights, out / "start.safetensors")
    args = [*TINY, "rounds=1", f"output_dir={out}", f"model.checkpoint={out / 'start.safetensors'}"]
    assert _cli("run", *args).exit_code == 0  # the checkpoint alone does not count
    assert _cli("run", "--overwrite", *args).exit_code == 0
    assert (out / "start.safetensors").is_file() and _rounds(out) == [1]


def test_overwrite_refuses_the_working_directory_home_and_files(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "precious.txt").write_text("keep me")
    monkeypatch.chdir(work)
    with pytest.raises(ConfigError, match="current directory"):
        claim_run_dir(Path("."), overwrite=True)
    with pytest.raises(ConfigError, match="current directory"):
        claim_run_dir(tmp_path, overwrite=True)  # an ancestor of the working directory
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("keep me")
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(ConfigError, match="your home"):
        claim_run_dir(home, overwrite=True)
    with pytest.raises(ConfigError, match="is not a directory"):
        claim_run_dir(work / "precious.txt", overwrite=True)
    assert (work / "precious.txt").read_text() == (home / ".bashrc").read_text() == "keep me"
    done = _cli("run", "--overwrite", *TINY, "rounds=1", f"output_dir={work}")
    assert done.exit_code == 2 and "refusing to clear" in done.output
    assert (work / "precious.txt").exists()


class TinyNet(nn.Module):
    def __init__(self, outputs: int = 2) -> None:
        super().__init__()
        self.layer = nn.Linear(2, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def _datasets() -> tuple[TensorDataset, TensorDataset]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(120, 2, generator=gen)
    y = (x[:, 0] > 0).long()
    return TensorDataset(x[:100], y[:100]), TensorDataset(x[100:], y[100:])


API_CONFIG = {"clients.num": 2, "clients.per_round": 2, "rounds": 1, "train.lr": 0.1}


def test_federate_refuses_a_non_empty_output_dir_unless_overwrite(tmp_path):
    train, test = _datasets()
    config = {**API_CONFIG, "output_dir": str(tmp_path / "api")}
    fedloom.federate(TinyNet(), train, test, config)
    with pytest.raises(ConfigError, match="is not empty"):
        fedloom.federate(TinyNet(), train, test, config)
    result = fedloom.federate(TinyNet(), train, test, config, overwrite=True)
    assert _rounds(result.run_dir) == [1]


def test_federate_loads_model_checkpoint_into_the_users_model(tmp_path):
    train, test = _datasets()
    start = {"layer.weight": torch.tensor([[2.0, 0.0], [-2.0, 0.0]]), "layer.bias": torch.zeros(2)}
    save_file(start, tmp_path / "start.safetensors")
    by_hand = TinyNet()
    by_hand.load_state_dict(start)
    expected = fedloom.federate(
        by_hand, train, test, {**API_CONFIG, "output_dir": str(tmp_path / "a")}
    )
    config = {
        **API_CONFIG,
        "output_dir": str(tmp_path / "b"),
        "model.checkpoint": str(tmp_path / "start.safetensors"),
    }
    result = fedloom.federate(TinyNet(), train, test, config)
    for name, tensor in expected.model.state_dict().items():
        assert torch.equal(result.model.state_dict()[name], tensor)

    with pytest.raises(ConfigError, match=r"layer.weight: checkpoint shape \(2, 2\) != model"):
        fedloom.federate(
            TinyNet(outputs=3), train, test, {**config, "output_dir": str(tmp_path / "c")}
        )


def test_federate_records_the_data_as_custom_and_the_config_stays_loadable(tmp_path):
    train, test = _datasets()
    result = fedloom.federate(
        TinyNet(), train, test, {**API_CONFIG, "output_dir": str(tmp_path / "a")}
    )
    saved = load_config(result.run_dir / "config.yaml")
    assert saved.data.name == "custom" and saved.model.name == "custom"
    with pytest.raises(ConfigError, match="data.name: federate"):
        fedloom.federate(TinyNet(), train, test, {**API_CONFIG, "data.name": "digits"})
    # fedloom has no copy of the data: resuming needs them again, said as a config error
    resumed = _cli("resume", str(result.run_dir), "rounds=2")
    assert resumed.exit_code == 2 and "data.name=custom" in resumed.output
    again = fedloom.resume(
        result.run_dir, ["rounds=2"], model=TinyNet(), data=_federated(train, test)
    )
    assert again.run().summary["rounds"] == 2


def _federated(train: TensorDataset, test: TensorDataset):
    from fedloom.data.base import from_torch_dataset
    from fedloom.data.config import DataConfig
    from fedloom.data.federated import federate_tensors

    return federate_tensors(
        from_torch_dataset(train), from_torch_dataset(test), 2, DataConfig(name="custom"), 0
    )


def test_overwrite_never_clears_an_input_folder_or_the_runs_own_record(tmp_path):
    data = tmp_path / "mnist"
    data.mkdir()
    (data / "train-images-idx3-ubyte").write_bytes(b"\0" * 16)
    link = tmp_path / "link"
    link.symlink_to(data)
    for inputs in ([data], [link]):  # the same folder, named directly or through a link
        with pytest.raises(ConfigError, match="is inside the run's input"):
            claim_run_dir(data, inputs, overwrite=True)
    assert (data / "train-images-idx3-ubyte").exists()
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("rounds: 2\n")
    with pytest.raises(ConfigError, match="the run directory's own record"):
        claim_run_dir(run, [run / "config.yaml"], overwrite=True)
    assert (run / "config.yaml").exists()
