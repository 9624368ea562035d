"""Tracking backends: TensorBoard, MLflow and W&B fed from a run, read back through their
own readers (TensorBoard's event reader, the MLflow client API)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import math
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from fedloom.cli import app
from fedloom.config import load_config
from fedloom.core.errors import ConfigError
from fedloom.experiment import Experiment, resume
from fedloom.report.config import LoggingConfig, active_loggers, missing_backends
from fedloom.report.tracking import update_norm

BASE = ["model.name=logreg", "clients.num=4", "clients.per_round=2", "rounds=2", "train.lr=0.05"]


def _events(path: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(path), size_guidance={"histograms": 0, "scalars": 0})
    events.Reload()
    return events


def _flat_norms(experiment: Experiment) -> dict[int, list[float]]:
    """Each accepted update's norm, computed independently: one float32 vector."""
    names = list(experiment.server.global_state)
    seen: dict[int, list[float]] = {}

    def watch(rnd: int, cid: str, update: dict[str, torch.Tensor]) -> None:
        flat = torch.cat([update[n].reshape(-1).float() for n in names])
        seen.setdefault(rnd, []).append(float(flat.norm()))

    experiment.server.update_observers.append(watch)
    return seen


class _FakeWandbRun:
    def __init__(self, calls: list[tuple[str, Any]]) -> None:
        self.calls = calls

    def log(self, values: dict[str, Any], step: int) -> None:
        self.calls.append(("log", (values, step)))

    def save(self, path: str, base_path: str, policy: str) -> None:
        self.calls.append(("save", Path(path).name))

    def finish(self, exit_code: int) -> None:
        self.calls.append(("finish", exit_code))


def _fake_wandb(calls: list[tuple[str, Any]]) -> types.ModuleType:
    module = types.ModuleType("wandb")
    module.__spec__ = importlib.machinery.ModuleSpec("wandb", None)

    def init(**kwargs: Any) -> _FakeWandbRun:
        calls.append(("init", kwargs))
        return _FakeWandbRun(calls)

    class Histogram:
        def __init__(self, values: list[float]) -> None:
            self.values = values

    module.init = init  # type: ignore[attr-defined]
    module.Histogram = Histogram  # type: ignore[attr-defined]
    return module


def _check_wandb_calls(
    calls: list[tuple[str, Any]],
    metrics: list[dict[str, Any]],
    norms: dict[int, list[float]],
    run_dir: Path,
) -> None:
    """The calls the W&B docs prescribe: init(project, config, dir), log(dict, step=round),
    a Histogram of the round's norms, save(file) of each artifact, finish()."""
    kind, init = calls[0]
    assert kind == "init" and init["project"] == "demo" and init["mode"] == "offline"
    assert init["dir"] == str(run_dir) and init["config"]["train.lr"] == 0.05
    logs = [args for kind, args in calls if kind == "log"]
    accuracy = [(v["test_accuracy"], step) for v, step in logs if "test_accuracy" in v]
    assert accuracy == [(m["test_accuracy"], m["round"]) for m in metrics]
    histograms = {step: v["update_norm"].values for v, step in logs if "update_norm" in v}
    assert sorted(histograms) == [1, 2]
    for rnd, values in histograms.items():
        assert sorted(values) == pytest.approx(sorted(norms[rnd]), rel=1e-5)
    saved = {args for kind, args in calls if kind == "save"}
    assert {"model.safetensors", "summary.json", "accuracy.png"} <= saved
    assert calls[-1] == ("finish", 0)


def test_logging_switches_and_the_loggers_list_are_one_list() -> None:
    switches = LoggingConfig(tensorboard=True, mlflow=True)
    assert active_loggers(["csv", "tensorboard"], switches) == ["csv", "tensorboard", "mlflow"]
    assert active_loggers([], LoggingConfig(wandb_project="p")) == ["wandb"]
    assert active_loggers(["csv"], LoggingConfig()) == ["csv"]


def test_update_norm_is_the_norm_of_the_model_tensors_as_one_vector() -> None:
    update = {"a": torch.tensor([3.0, 4.0]), "b": torch.tensor([[12.0]]), "c_extra": torch.ones(9)}
    assert update_norm(update, ["a", "b"]) == 13.0  # sqrt(9 + 16 + 144)
    assert update_norm(update, []) == 0.0


def test_tensorboard_mlflow_and_wandb_get_scalars_histograms_params_and_artifacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient
    from tensorboard.plugins.hparams import plugin_data_pb2

    calls: list[tuple[str, Any]] = []
    monkeypatch.setitem(sys.modules, "wandb", _fake_wandb(calls))  # not installed here
    store = f"file:{tmp_path / 'mlruns'}"
    run_dir = tmp_path / "run"
    cfg = load_config(
        None,
        [
            *BASE,
            "logging.tensorboard=true",
            "logging.mlflow=true",
            f"logging.mlflow_uri={store}",
            "logging.wandb_project=demo",
            "logging.wandb_offline=true",
            f"output_dir={run_dir}",
        ],
    )
    experiment = Experiment(cfg)
    norms = _flat_norms(experiment)
    result = experiment.run()

    events = _events(run_dir / "tensorboard")
    histograms = {h.step: h.histogram_value for h in events.Histograms("update_norm")}
    assert sorted(histograms) == [1, 2]
    for rnd, hist in histograms.items():
        assert hist.num == 2  # every client of the round
        assert math.isclose(hist.min, min(norms[rnd]), rel_tol=1e-5)
        assert math.isclose(hist.max, max(norms[rnd]), rel_tol=1e-5)
        assert math.isclose(hist.sum, sum(norms[rnd]), rel_tol=1e-5)
    scalars = events.Scalars("test_accuracy")
    assert [e.step for e in scalars] == [1, 2]
    assert [e.value for e in scalars] == pytest.approx([m["test_accuracy"] for m in result.metrics])
    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["train.lr"].number_value == pytest.approx(0.05)
    assert hparams["clients.num"].number_value == 4
    assert hparams["strategy.name"].string_value == "fedavg"

    client = MlflowClient(store)
    run_id = json.loads((run_dir / "mlflow.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["train.lr"] == "0.05" and run.data.params["rounds"] == "2"
    history = client.get_metric_history(run_id, "test_accuracy")
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == pytest.approx([m["test_accuracy"] for m in result.metrics])
    widest = client.get_metric_history(run_id, "update_norm_max")
    assert [m.value for m in widest] == pytest.approx([max(norms[1]), max(norms[2])], rel=1e-5)
    stored = {a.path for a in client.list_artifacts(run_id)}
    assert {"model.safetensors", "summary.json", "config.yaml", "accuracy.png"} <= stored
    local = client.download_artifacts(run_id, "model.safetensors", str(tmp_path / "dl"))
    assert Path(local).read_bytes() == (run_dir / "model.safetensors").read_bytes()

    _check_wandb_calls(calls, result.metrics, norms, run_dir)

    resumed = resume(run_dir, ["rounds=3"]).run()  # the same MLflow run continues
    assert client.get_run(run_id).info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run_id, "test_accuracy")]
    assert steps == [1, 2, 3] and len(resumed.metrics) == 3
    assert len(client.search_runs([run.info.experiment_id])) == 1


@pytest.mark.parametrize("release", [False, True])
def test_update_norms_under_dp_only_with_release_client_info(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], release: bool
) -> None:
    cfg = load_config(
        None,
        [
            *BASE,
            "rounds=1",
            "privacy.mode=central",
            "privacy.clip=1.0",
            "privacy.target_epsilon=50",  # the noise is calibrated: a phase of its own
            f"privacy.release_client_info={str(release).lower()}",
            "logging.tensorboard=true",
            f"output_dir={tmp_path}",
        ],
    )
    Experiment(cfg).run()
    tags = _events(tmp_path / "tensorboard").Tags()
    assert ("update_norm" in tags["histograms"]) is release
    assert "epsilon" in tags["scalars"]  # the aggregate figures are logged either way
    assert re.search(r"^privacy calibration: \d+\.\d s$", capsys.readouterr().err, re.M)


def test_a_store_mlflow_cannot_open_is_one_line_naming_the_key(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "run",
            *BASE,
            "logging.mlflow=true",
            "logging.mlflow_uri=nosuchscheme://x",
            f"output_dir={tmp_path}",
        ],
    )
    assert result.exit_code == 2
    error = [line for line in result.output.splitlines() if "error" in line]
    assert len(error) == 1 and "logging.mlflow_uri" in error[0]
    assert "Traceback" not in result.output


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb installed")
def test_missing_wandb_is_one_line_with_the_pip_command(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["run", *BASE, "logging.wandb_project=demo", f"output_dir={tmp_path}"]
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [  # one line, exit 2
        "error: logging.wandb_project=demo needs wandb, which is not installed: "
        "pip install 'fedloom[wandb]'"
    ]
    assert not (tmp_path / "metrics.jsonl").exists()  # refused before anything ran


def test_missing_backend_lines_name_the_switch_and_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    lines = missing_backends(LoggingConfig(tensorboard=True, mlflow=True))
    assert lines == [
        "logging.tensorboard=true needs tensorboard, which is not installed: "
        "pip install 'fedloom[tracking]'",
        "logging.mlflow=true needs mlflow, which is not installed: pip install 'fedloom[mlflow]'",
    ]
    with pytest.raises(ConfigError, match=r"fedloom\[mlflow\]"):
        load_config(None, ["logging.mlflow=true"])


def test_default_store_without_database_drivers_is_the_local_mlruns_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow = pytest.importorskip("mlflow")
    from fedloom.report.mlflow_logger import _default_uri

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(mlflow, "get_tracking_uri", lambda: "sqlite:///mlflow.db")
    drivers = importlib.util.find_spec("sqlalchemy") and importlib.util.find_spec("alembic")
    expected = "sqlite:///mlflow.db" if drivers else (tmp_path / "mlruns").as_uri()
    assert _default_uri(mlflow) == expected
    monkeypatch.setattr(mlflow, "get_tracking_uri", lambda: "http://tracker:5000")
    assert _default_uri(mlflow) == "http://tracker:5000"


def test_mlflow_with_no_uri_runs_against_the_default_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = CliRunner().invoke(
        app, ["run", *BASE, "logging.mlflow=true", f"output_dir={tmp_path / 'run'}"]
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "mlflow.json").read_text())
    if saved["tracking_uri"].startswith("file:"):
        assert (tmp_path / "mlruns").is_dir()
