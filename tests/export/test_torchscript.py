"""TorchScript export: a traced archive checked in TorchScript's interpreter, with its
preprocessing inside it, so ``fedloom predict`` needs nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fedloom.cli import app
from fedloom.core.errors import FedloomError
from fedloom.export.model import verify_file
from fedloom.export.predict import predict
from fedloom.export.run import export_run, load_run_model


def test_torchscript_export_verified_and_predicting(run_copy: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["export", str(run_copy), "--format", "torchscript", "--latency-runs", "3"]
    )
    assert result.exit_code == 0, result.output
    path = run_copy / "export" / "model.pt"
    record = json.loads((run_copy / "export" / "export.json").read_text())["model.pt"]
    assert record["verification"]["top1_agreement"] == 1.0
    assert record["verification"]["max_abs_logit_diff"] <= 1e-4
    assert record["exporter"] == "torch.jit.trace"
    _, model, data = load_run_model(run_copy)
    raw = np.rint(data.test.x[:20, 0].numpy() * 16).astype(np.uint8)
    np.savez(tmp_path / "raw.npz", x=raw)  # the stored scale (16) comes from the archive
    with torch.no_grad():
        want = model(torch.from_numpy(raw / 16.0).float().reshape(20, 1, 8, 8)).argmax(1)
    assert [p.label for p in predict(path, tmp_path / "raw.npz")] == want.tolist()
    with pytest.raises(FedloomError, match="not torchscript"):
        export_run(run_copy, format="torchscript", quantize="int8")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(path.read_bytes()[:500])
    with pytest.raises(FedloomError, match="not a TorchScript archive"):
        verify_file(broken, model, data.test.x)


def test_a_lora_run_exports_its_merged_model(tmp_path: Path) -> None:
    from fedloom.config import load_config
    from fedloom.experiment import Experiment

    lora = ["model.name=mlp_2nn", "clients.num=2", "rounds=1", "finetune.mode=lora"]
    Experiment(load_config(None, [*lora, f"output_dir={tmp_path / 'run'}"])).run()
    report = export_run(tmp_path / "run", latency_runs=2)  # ONNX of the plain architecture
    assert report.verification.top1_agreement == 1.0
    assert report.verification.max_abs_logit_diff <= 1e-4
