"""Check an exported file against the PyTorch model it came from, in the runtime that
will run it: logits, top-1 agreement, accuracy, and latency at batch 1."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedloom.client.task import prediction
from fedloom.core.errors import FedloomError

BATCH = 256
Runner = Callable[[np.ndarray], np.ndarray]
"""Runs an exported model on a float32 batch ``(N, *input_shape)``; returns its logits."""


@dataclass(frozen=True)
class Verification:
    """How an exported model's outputs compare with PyTorch's on the same inputs."""

    num_examples: int
    top1_agreement: float
    max_abs_logit_diff: float
    tolerance: float
    """The largest logit difference allowed (float exports); int8 reports it only."""
    min_agreement: float
    accuracy_exported: float | None
    accuracy_torch: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def open_session(path: Path) -> Any:
    """An onnxruntime CPU session for ``path``; a file it cannot load is a FedloomError."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: a rejected file is reported by us
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FedloomError(f"{path}: onnxruntime cannot load the model ({first})") from None


def run_session(session: Any, x: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """The session's first output for every row of ``x``, in batches."""
    name = session.get_inputs()[0].name
    outputs = [session.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outputs).astype(np.float64)


def torch_logits(model: nn.Module, x: torch.Tensor, batch: int = BATCH) -> np.ndarray:
    """``model``'s outputs for ``x`` (eval mode, no gradients), as float64."""
    model.eval()
    with torch.no_grad():
        parts = [prediction(model(x[i : i + batch])) for i in range(0, len(x), batch)]
    return torch.cat(parts).double().cpu().numpy()


def _accuracy(logits: np.ndarray, labels: np.ndarray | None) -> float | None:
    if labels is None:
        return None
    return float((logits.argmax(axis=1) == labels).mean())


def compare(
    reference: np.ndarray,
    exported: np.ndarray,
    labels: np.ndarray | None,
    *,
    tolerance: float,
    min_agreement: float,
    check_logits: bool,
) -> Verification:
    """The comparison of ``exported`` logits with ``reference`` ones ``(N, classes)``.

    Raises a FedloomError naming the first mismatching output: any non-finite output; with
    ``check_logits`` a logit further than ``tolerance`` from PyTorch's; a top-1
    agreement below ``min_agreement``.
    """
    if exported.shape != reference.shape:
        raise FedloomError(
            f"exported model outputs shape {exported.shape}, PyTorch {reference.shape}"
        )
    diff = np.abs(exported - reference).reshape(len(reference), -1)
    worst = diff.max(axis=1, initial=0.0)
    bad = ~np.isfinite(exported).reshape(len(exported), -1).all(axis=1)
    if check_logits:
        bad |= ~(worst <= tolerance)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise FedloomError(
            f"exported model does not match PyTorch: first mismatching output is example "
            f"{i} (largest logit difference {worst[i]:.3g}, tolerance {tolerance:g}; "
            f"{int(bad.sum())} of {len(bad)} examples differ)"
        )
    agree = exported.argmax(axis=1) == reference.argmax(axis=1)
    agreement = float(agree.mean()) if len(agree) else 1.0
    if agreement < min_agreement:
        i = int(np.flatnonzero(~agree)[0])
        raise FedloomError(
            f"exported model agrees with PyTorch on {agreement:.2%} of {len(agree)} examples "
            f"(needs {min_agreement:.2%}); first mismatching output is example {i} "
            f"(class {int(exported[i].argmax())}, PyTorch {int(reference[i].argmax())})"
        )
    return Verification(
        num_examples=len(reference),
        top1_agreement=agreement,
        max_abs_logit_diff=float(worst.max(initial=0.0)),
        tolerance=tolerance,
        min_agreement=min_agreement,
        accuracy_exported=_accuracy(exported, labels),
        accuracy_torch=_accuracy(reference, labels),
    )


def onnx_runner(path: Path) -> Runner:
    """A function running the ONNX file at ``path`` in onnxruntime on a batch."""
    session = open_session(path)
    return lambda x: run_session(session, x)


def latency_ms(run: Runner, example: np.ndarray, runs: int) -> float:
    """Median milliseconds of one batch-1 call, over ``runs`` calls after a warm-up."""
    one = np.ascontiguousarray(example[:1])
    for _ in range(min(10, runs)):
        run(one)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run(one)
        times.append(time.perf_counter() - started)
    return 1000.0 * statistics.median(times)
