"""A damaged file is rejected by the check, whatever the damage."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from onnx import load, numpy_helper

from fedloom.core.errors import FedloomError
from fedloom.export.model import ExportReport, verify_file
from fedloom.export.run import load_run_model
from fedloom.export.verify import compare


def _weights_offset(path: Path) -> tuple[int, int]:
    """Where the largest weight tensor's bytes sit in the file, and their length."""
    largest = max(load(str(path)).graph.initializer, key=lambda t: len(t.raw_data))
    raw = numpy_helper.to_array(largest).tobytes()
    return path.read_bytes().index(raw), len(raw)


def test_flipped_weight_bytes_are_rejected(
    finished: Path, exported: ExportReport, tmp_path: Path
) -> None:
    _, model, data = load_run_model(finished)
    good = verify_file(exported.path, model, data.test.x, data.test.y)
    assert good.top1_agreement == 1.0
    broken = Path(shutil.copy(exported.path, tmp_path / "broken.onnx"))
    start, length = _weights_offset(broken)
    raw = bytearray(broken.read_bytes())
    raw[start : start + length] = bytes(b ^ 0xFF for b in raw[start : start + length])
    broken.write_bytes(bytes(raw))
    with pytest.raises(FedloomError, match="first mismatching output is example 0"):
        verify_file(broken, model, data.test.x, data.test.y)


def test_a_truncated_file_cannot_be_loaded(
    finished: Path, exported: ExportReport, tmp_path: Path
) -> None:
    _, model, data = load_run_model(finished)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(exported.path.read_bytes()[:1000])
    with pytest.raises(FedloomError, match="onnxruntime cannot load the model"):
        verify_file(cut, model, data.test.x)


def test_compare_names_the_first_mismatch() -> None:
    reference = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    close = reference + 1e-6
    ok = compare(reference, close, np.array([0, 1, 1, 1]), tolerance=1e-4, min_agreement=1.0,
                 check_logits=True)  # fmt: skip
    assert ok.top1_agreement == 1.0 and ok.accuracy_exported == 0.75
    assert ok.max_abs_logit_diff == pytest.approx(1e-6)
    off = close.copy()
    off[2, 1] = 5.0  # example 2 now predicts class 1
    with pytest.raises(FedloomError, match="example 2 .largest logit difference 5"):
        compare(reference, off, None, tolerance=1e-4, min_agreement=0.0, check_logits=True)
    quantized = compare(reference, off, None, tolerance=1e-4, min_agreement=0.75,
                        check_logits=False)  # fmt: skip
    assert quantized.top1_agreement == 0.75 and quantized.max_abs_logit_diff == pytest.approx(5)
    with pytest.raises(FedloomError, match="75.00% of 4 examples .needs 99.00%.; first "
                       "mismatching output is example 2 .class 1, PyTorch 0."):  # fmt: skip
        compare(reference, off, None, tolerance=1e-4, min_agreement=0.99, check_logits=False)
    nan = close.copy()
    nan[1, 0] = np.nan
    with pytest.raises(FedloomError, match="example 1"):
        compare(reference, nan, None, tolerance=1e-4, min_agreement=0.0, check_logits=False)
