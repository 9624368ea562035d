"""``export_model``: a PyTorch model -> an ONNX or ExecuTorch file (float or int8) that has
been run in its runtime and compared with the model before it is presented as done."""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from fedloom.core.errors import FedloomError
from fedloom.core.files import write_atomic
from fedloom.data.base import Split
from fedloom.export.metadata import Preprocessing, to_props
from fedloom.export.onnx_file import set_metadata, weight_figures, write_onnx
from fedloom.export.pte import pte_runner, require_executorch, sidecar, write_pte
from fedloom.export.quantize import quantize_int8
from fedloom.export.torchscript import torchscript_runner, write_torchscript
from fedloom.export.verify import (
    Runner,
    Verification,
    compare,
    latency_ms,
    onnx_runner,
    torch_logits,
)

Format = Literal["onnx", "executorch", "torchscript"]
SUFFIX: dict[str, str] = {"onnx": ".onnx", "executorch": ".pte", "torchscript": ".pt"}
Quantize = Literal["int8"]
REPORT_FILE = "export.json"
FLOAT_TOLERANCE = 1e-4
"""Largest absolute logit difference a float export may show against PyTorch."""
MIN_AGREEMENT = 0.99
"""Smallest top-1 agreement with PyTorch an export must reach (the int8 goal)."""


@dataclass(frozen=True)
class ExportReport:
    """What ``export_model`` made and measured; the entry it writes to ``export.json``."""

    path: Path
    format: Format
    quantize: Quantize | None
    exporter: str
    size_bytes: int
    float_size_bytes: int
    verification: Verification
    latency_ms_batch1: float
    latency_runs: int
    weights: dict[str, float | int]
    preprocessing: Preprocessing
    versions: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record.update(
            path=str(self.path),
            size_ratio_to_float=self.size_bytes / self.float_size_bytes,
            verification=self.verification.as_dict(),
            preprocessing=self.preprocessing.model_dump(mode="json"),
        )
        return record


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"torch": str(torch.__version__)}
    for name in ("onnx", "onnxruntime", "executorch"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _default_preprocessing(model: nn.Module, example: torch.Tensor) -> Preprocessing:
    classes = int(torch_logits(model, example[:1]).shape[1])
    return Preprocessing(
        input_shape=tuple(example.shape[1:]), label_names=[str(k) for k in range(classes)]
    )


def runner_for(path: Path) -> Runner:
    """Runs ``path`` in its own runtime: ExecuTorch for ``.pte``, TorchScript's
    interpreter for ``.pt``, onnxruntime otherwise."""
    if path.suffix == ".pte":
        return pte_runner(path)
    return torchscript_runner(path) if path.suffix == ".pt" else onnx_runner(path)


def verify_file(
    path: Path,
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    quantized: bool = False,
    tolerance: float = FLOAT_TOLERANCE,
    min_agreement: float = MIN_AGREEMENT,
) -> Verification:
    """Run the exported file ``path`` in its runtime on ``x`` and compare it with
    ``model``; a FedloomError names the first mismatching output. A float file must match
    every logit within ``tolerance``; an int8 one only reports the difference."""
    exported = runner_for(path)(np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32))
    reference = torch_logits(model, x.cpu())
    return compare(
        reference,
        exported,
        None if labels is None else labels.cpu().numpy(),
        tolerance=tolerance,
        min_agreement=min_agreement,
        check_logits=not quantized,
    )


def _write(
    format: Format,
    model: nn.Module,
    example: torch.Tensor,
    target: Path,
    calibration: torch.Tensor | None,
    props: dict[str, str],
) -> tuple[str, int]:
    """Write the exported file to ``target``; ``(exporter, size of the float file)``."""
    with tempfile.TemporaryDirectory(prefix="fedloom-export-") as work:
        plain = Path(work) / f"float{SUFFIX[format]}"
        if format == "torchscript":
            return write_torchscript(model, example[:1], target, props), 0
        if format == "executorch":
            write_pte(model, example, plain, None)
            if calibration is not None:
                write_pte(model, example, target, calibration)
            else:
                shutil.copyfile(plain, target)
            return "torch.export+xnnpack", plain.stat().st_size
        exporter = write_onnx(model, example[:1], plain)
        props["fedloom.exporter"] = exporter
        set_metadata(plain, props)
        if calibration is not None:
            quantize_int8(plain, target, calibration.numpy())
            set_metadata(target, props)  # the quantizer does not carry it over
        else:
            shutil.copyfile(plain, target)
        return exporter, plain.stat().st_size


def _weights(path: Path, model: nn.Module) -> dict[str, float | int]:
    if path.suffix == ".onnx":
        return weight_figures(path)
    import gzip

    values = [p.detach() for p in model.state_dict().values() if p.is_floating_point()]
    total = sum(v.numel() for v in values)
    zeros = sum(int((v == 0).sum()) for v in values)
    return {
        "weights": total,
        "zeros_fraction": zeros / total if total else 0.0,
        "gzip_bytes": len(gzip.compress(path.read_bytes(), compresslevel=9, mtime=0)),
    }


def _record(report: ExportReport) -> None:
    """Add ``report`` to ``export.json`` beside its file (one entry per exported file)."""
    path = report.path.parent / REPORT_FILE
    entries: dict[str, Any] = {}
    if path.is_file():
        try:
            entries = json.loads(path.read_text())
        except ValueError:
            entries = {}
    entries[report.path.name] = report.as_dict()
    write_atomic(path, (json.dumps(entries, indent=2) + "\n").encode())


def export_model(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    out: str | Path,
    format: Format = "onnx",
    quantize: Quantize | None = None,
    test: Split | None = None,
    calibration: torch.Tensor | None = None,
    preprocessing: Preprocessing | None = None,
    tolerance: float = FLOAT_TOLERANCE,
    min_agreement: float = MIN_AGREEMENT,
    latency_runs: int = 100,
) -> ExportReport:
    """Export ``model`` for inputs like ``example_input`` ``(B, *input_shape)`` to ``out``
    (ONNX, or an ExecuTorch ``.pte`` with ``format="executorch"``).

    The file is checked in its runtime against ``model`` on ``test`` (or on
    ``example_input`` when no test split is given) before it is renamed to ``out``; a
    failed check raises a FedloomError and leaves no file at ``out``. ``quantize="int8"``
    calibrates on ``calibration`` (default: the test inputs). The outcome is added to
    ``export.json`` beside ``out``.
    """
    if format not in SUFFIX:
        raise FedloomError(
            f"export format {format!r} is not supported; use onnx, executorch or torchscript"
        )
    if format == "torchscript" and quantize is not None:
        raise FedloomError("--quantize int8 is for onnx and executorch, not torchscript")
    if format == "executorch":
        require_executorch()  # before any work
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).cpu().eval()
    example = example_input.detach().cpu().to(torch.float32)
    pre = preprocessing or _default_preprocessing(model, example)
    x = example if test is None else test.x.cpu()
    labels = test.y if test is not None and test.has_labels else None
    calibrate = None if quantize is None else (x if calibration is None else calibration.cpu())
    pending = out.with_name(f".{out.name}.{os.getpid()}.tmp{SUFFIX[format]}")
    try:
        props = {**to_props(pre), "fedloom.quantize": quantize or "none"}
        exporter, float_size = _write(format, model, example, pending, calibrate, props)
        checked = verify_file(
            pending,
            model,
            x,
            labels,
            quantized=quantize is not None,
            tolerance=tolerance,
            min_agreement=min_agreement,
        )
        latency = latency_ms(runner_for(pending), x[:1].numpy(), latency_runs)
        report = ExportReport(
            path=out,
            format=format,
            quantize=quantize,
            exporter=exporter,
            size_bytes=pending.stat().st_size,
            float_size_bytes=float_size or pending.stat().st_size,
            verification=checked,
            latency_ms_batch1=latency,
            latency_runs=latency_runs,
            weights=_weights(pending, model),
            preprocessing=pre,
            versions=_versions(),
        )
        if format == "executorch":  # the .pte has no metadata field: a JSON beside it
            write_atomic(sidecar(out), (json.dumps(props, indent=2) + "\n").encode())
        os.replace(pending, out)
    finally:
        pending.unlink(missing_ok=True)
    _record(report)
    return report
