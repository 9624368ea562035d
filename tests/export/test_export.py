"""``fedloom export`` and ``fedloom.export_model``: a file that onnxruntime has run and
compared with the PyTorch model, or an error and no file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import fedloom
from fedloom.cli import app
from fedloom.core.errors import FedloomError
from fedloom.data.base import TensorData
from fedloom.export.model import ExportReport
from fedloom.export.run import export_run


def test_float_export_matches_the_run(finished: Path, exported: ExportReport) -> None:
    path = finished / "export" / "model.onnx"
    assert exported.path == path and path.is_file()
    assert exported.exporter == "dynamo"
    check = exported.verification
    summary = json.loads((finished / "summary.json").read_text())
    assert check.num_examples == 359  # digits' 20% stratified test split
    assert check.top1_agreement == 1.0
    assert check.max_abs_logit_diff <= 1e-4 == check.tolerance
    assert check.accuracy_exported == check.accuracy_torch
    assert check.accuracy_torch == pytest.approx(summary["final_test_accuracy"], abs=1e-9)
    assert exported.size_bytes == path.stat().st_size == exported.float_size_bytes
    weights = 64 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10  # mlp_2nn on 8x8 digits
    assert 4 * weights < exported.size_bytes < 4 * weights * 1.02
    assert exported.weights["weights"] == weights
    assert 0 < exported.weights["gzip_bytes"] < exported.size_bytes
    assert exported.latency_ms_batch1 > 0
    record = json.loads((finished / "export" / "export.json").read_text())["model.onnx"]
    assert record["verification"]["top1_agreement"] == 1.0
    assert record["size_bytes"] == exported.size_bytes
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


def test_int8_export_from_the_command_line(run_copy: Path) -> None:
    result = CliRunner().invoke(
        app, ["export", str(run_copy), "--quantize", "int8", "--latency-runs", "5"]
    )
    assert result.exit_code == 0, result.output
    assert "top-1 agreement" in result.output
    path = run_copy / "export" / "model.int8.onnx"
    record = json.loads((run_copy / "export" / "export.json").read_text())["model.int8.onnx"]
    assert record["quantize"] == "int8"
    assert record["size_bytes"] == path.stat().st_size
    assert record["size_ratio_to_float"] <= 0.3  # the goal for int8 ONNX
    check = record["verification"]
    assert check["top1_agreement"] >= 0.99
    assert check["max_abs_logit_diff"] > 1e-4  # int8 is reported, not held to the float bound
    assert abs(check["accuracy_exported"] - check["accuracy_torch"]) <= 0.01


def test_a_failed_check_leaves_no_file(run_copy: Path) -> None:
    with pytest.raises(FedloomError, match="first mismatching output is example 0"):
        export_run(run_copy, tolerance=-1.0, latency_runs=1)  # no logit can pass
    leftovers = list((run_copy / "export").iterdir()) if (run_copy / "export").exists() else []
    assert leftovers == []


def test_an_unfinished_run_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a run directory" in result.output


class _Custom(nn.Module):
    """A model no registry knows: it can only be exported from Python."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.GELU())
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x) + x.sum(dim=1, keepdim=True))


def test_a_python_model_through_export_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _Custom()
    with torch.no_grad():
        model.head.weight[:, :8] = 0  # pruned: 24 of the 195 weights
    x = torch.randn(50, 6)
    test = TensorData(x, torch.randint(0, 3, (50,)))
    report = fedloom.export_model(
        model, x[:1], out=tmp_path / "custom.onnx", test=test, latency_runs=3
    )
    assert report.verification.num_examples == 50
    assert report.verification.top1_agreement == 1.0
    assert report.verification.max_abs_logit_diff <= 1e-4
    assert report.preprocessing.input_shape == (6,)
    assert report.preprocessing.label_names == ["0", "1", "2"]
    assert report.weights["weights"] == 6 * 16 + 16 + 2 * 16 + 16 * 3 + 3
    assert report.weights["zeros_fraction"] == pytest.approx((24 + 16) / 195)  # + LayerNorm bias
    assert json.loads((tmp_path / "export.json").read_text())["custom.onnx"]["format"] == "onnx"
    assert model.training  # the caller's model is left as it was


@pytest.mark.skipif(
    importlib.util.find_spec("executorch") is not None, reason="ExecuTorch is installed"
)
def test_executorch_without_the_extra_says_how_to_install(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export", str(tmp_path), "--format", "executorch"])
    assert result.exit_code == 2
    assert "pip install 'fedloom[edge]'" in result.output
