"""One tiny finished run (mlp_2nn on digits) and its float ONNX export, shared by the
export tests: training and the dynamo exporter each take seconds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fedloom.config import load_config
from fedloom.experiment import Experiment
from fedloom.export.model import ExportReport
from fedloom.export.run import export_run

TINY = ["model.name=mlp_2nn", "clients.num=3", "clients.per_round=3", "rounds=3", "seed=3"]


@pytest.fixture(scope="package")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "run"
    Experiment(load_config(None, [*TINY, f"output_dir={out}"])).run()
    return out


@pytest.fixture(scope="package")
def exported(finished: Path) -> ExportReport:
    return export_run(finished, latency_runs=5)


@pytest.fixture
def run_copy(finished: Path, tmp_path: Path) -> Path:
    """A copy of the finished run without its exports, for tests that export again."""
    copy = Path(shutil.copytree(finished, tmp_path / "run"))
    shutil.rmtree(copy / "export", ignore_errors=True)
    return copy
