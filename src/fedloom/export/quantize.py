"""Static int8 quantization of an ONNX file with onnxruntime's tools: QDQ format,
per-channel weights, activation ranges calibrated on examples of the training data."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fedloom.core.errors import FedloomError


class _Batches:
    """onnxruntime's ``CalibrationDataReader``: ``{input_name: batch}`` until exhausted."""

    def __init__(self, input_name: str, examples: np.ndarray, batch_size: int) -> None:
        self._batches: Iterator[np.ndarray] = iter(
            examples[i : i + batch_size] for i in range(0, len(examples), batch_size)
        )
        self._name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self._name: batch}

    def rewind(self) -> None:  # calibration reads the data once
        pass


def quantize_int8(
    source: Path, target: Path, calibration: np.ndarray, batch_size: int = 32
) -> None:
    """Write ``source`` quantized to int8 as ``target``, activations calibrated (min/max)
    on ``calibration`` ``(N, *input_shape)`` float32."""
    import onnx
    from onnxruntime.quantization import (
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise FedloomError("int8 quantization needs calibration examples; got none")
    input_name = onnx.load(str(source), load_external_data=False).graph.input[0].name
    reader = _Batches(input_name, np.ascontiguousarray(calibration, dtype=np.float32), batch_size)
    with tempfile.TemporaryDirectory(prefix="fedloom-quant-") as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            reader,  # a CalibrationDataReader by its get_next method
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
