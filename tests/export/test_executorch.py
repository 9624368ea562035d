"""ExecuTorch export (the ``edge`` extra): verified in ExecuTorch's runtime, int8 through
PT2E and XNNPACK, predictions through the JSON beside the ``.pte``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedloom.cli import app
from fedloom.export.predict import predict
from fedloom.export.run import export_run, load_run_model

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("executorch") is None,
    reason="ExecuTorch is not installed (pip install 'fedloom[edge]')",
)


def test_float_and_int8_pte(run_copy: Path, tmp_path: Path) -> None:
    float_report = export_run(run_copy, format="executorch", latency_runs=5)
    path = run_copy / "export" / "model.pte"
    assert float_report.path == path and path.is_file()
    assert float_report.verification.top1_agreement == 1.0
    assert float_report.verification.max_abs_logit_diff <= 1e-4
    int8 = export_run(run_copy, format="executorch", quantize="int8", latency_runs=5)
    assert int8.verification.top1_agreement >= 0.99
    assert int8.size_bytes < 0.5 * int8.float_size_bytes
    records = json.loads((run_copy / "export" / "export.json").read_text())
    assert sorted(records) == ["model.int8.pte", "model.pte"]
    _, model, data = load_run_model(run_copy)
    raw = np.rint(data.test.x[:20, 0].numpy() * 16).astype(np.uint8)
    np.savez(tmp_path / "raw.npz", x=raw)
    found = [p.label for p in predict(path, tmp_path / "raw.npz")]
    assert found == model(data.test.x[:20]).argmax(dim=1).tolist()


def test_missing_sidecar_is_named(run_copy: Path, tmp_path: Path) -> None:
    export_run(run_copy, format="executorch", latency_runs=1)
    (run_copy / "export" / "model.pte.json").unlink()
    np.savez(tmp_path / "x.npz", x=np.zeros((1, 1, 8, 8), dtype=np.float32))
    result = CliRunner().invoke(
        app, ["predict", str(run_copy / "export" / "model.pte"), str(tmp_path / "x.npz")]
    )
    assert result.exit_code == 1
    assert "model.pte.json is missing" in result.output
