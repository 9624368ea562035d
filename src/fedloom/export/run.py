"""Export the model of a finished run directory: its config rebuilds the data and the
architecture, ``model.safetensors`` holds the final weights (LoRA already merged)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from fedloom.config import FedConfig
from fedloom.core.errors import ConfigError, FedloomError
from fedloom.core.seeding import derive_seed
from fedloom.data.base import FederatedDataset
from fedloom.data.federated import load_federated
from fedloom.export.metadata import for_dataset
from fedloom.export.model import (
    FLOAT_TOLERANCE,
    MIN_AGREEMENT,
    SUFFIX,
    ExportReport,
    Format,
    Quantize,
    export_model,
)
from fedloom.export.pte import require_executorch
from fedloom.models.registry import build_model
from fedloom.rundir import saved_config

CALIBRATION_EXAMPLES = 256
"""Train examples that calibrate int8 activation ranges (a seeded random draw)."""


def default_out(run_dir: Path, format: Format, quantize: Quantize | None) -> Path:
    """``RUN_DIR/export/model.onnx`` (``.pte`` for ExecuTorch), ``model.int8.onnx`` for int8."""
    stem = "model.int8" if quantize == "int8" else "model"
    return run_dir / "export" / f"{stem}{SUFFIX[format]}"


def load_run_model(run_dir: Path) -> tuple[FedConfig, nn.Module, FederatedDataset]:
    """The config of ``run_dir`` (its plugins imported), its architecture holding
    ``model.safetensors``, and its data."""
    config = saved_config(run_dir)
    weights = run_dir / "model.safetensors"
    if not weights.is_file():
        raise FedloomError(f"{run_dir} has no model.safetensors: the run has not finished")
    if config.task.custom:
        raise ConfigError(
            [
                f"{run_dir} used a custom {', '.join(config.task.custom)} that config.yaml "
                "cannot hold; export it in Python with fedloom.export.export_model"
            ]
        )
    data = load_federated(config.data, config.clients.num, config.seed)
    return config, _model(config, data, weights), data


def _model(config: FedConfig, data: FederatedDataset, weights: Path) -> nn.Module:
    model = build_model(
        config.model.name, data.input_shape, data.num_classes, data_name=config.data.name
    )
    state = load_file(str(weights))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise FedloomError(
            f"{weights} does not fit model {config.model.name} ({first}); a model built in "
            "Python is exported with fedloom.export.export_model"
        ) from None
    return model.eval()


def export_run(
    run_dir: str | Path,
    *,
    format: Format = "onnx",
    quantize: Quantize | None = None,
    out: str | Path | None = None,
    tolerance: float = FLOAT_TOLERANCE,
    min_agreement: float = MIN_AGREEMENT,
    latency_runs: int = 100,
) -> ExportReport:
    """Export ``run_dir``'s model, verified on the run's test split, int8 calibrated on
    ``CALIBRATION_EXAMPLES`` of its train split."""
    run_dir = Path(run_dir)
    if format == "executorch":
        require_executorch()  # before the data are loaded
    config, model, data = load_run_model(run_dir)
    if len(data.test) == 0:
        raise FedloomError(f"{run_dir}: the run's data has no test split to verify on")
    generator = torch.Generator().manual_seed(derive_seed(config.seed, "export", "calibration"))
    source = data.train if len(data.train) else data.test
    pick = torch.randperm(len(source), generator=generator)[:CALIBRATION_EXAMPLES]
    return export_model(
        model,
        data.test.x[:1],
        out=default_out(run_dir, format, quantize) if out is None else Path(out),
        format=format,
        quantize=quantize,
        test=data.test,
        calibration=source.x[pick],
        preprocessing=for_dataset(config.data.name, data.input_shape, data.num_classes),
        tolerance=tolerance,
        min_agreement=min_agreement,
        latency_runs=latency_runs,
    )
