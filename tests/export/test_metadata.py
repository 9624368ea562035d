"""The preprocessing and label names travel inside the ONNX file."""

from __future__ import annotations

import json

import onnx
import pytest

from fedloom.core.errors import FedloomError
from fedloom.export.metadata import Preprocessing, for_dataset, from_props, to_props
from fedloom.export.model import ExportReport


def test_metadata_round_trip_through_the_file(exported: ExportReport) -> None:
    props = {p.key: p.value for p in onnx.load(str(exported.path)).metadata_props}
    stored = from_props(props, str(exported.path))
    assert stored == for_dataset("digits", (1, 8, 8), 10)
    assert stored.scale == 16.0  # digits: pixel counts 0..16
    assert stored.label_names == [str(k) for k in range(10)]
    assert json.loads(props["input_shape"]) == [1, 8, 8]
    assert props["input_dtype"] == "float32"
    assert props["fedloom.exporter"] == "dynamo"
    assert props["fedloom.quantize"] == "none"


def test_known_datasets_name_their_classes() -> None:
    fashion = for_dataset("fashion_mnist", (1, 28, 28), 10)
    assert fashion.scale == 255.0 and fashion.label_names[9] == "Ankle boot"
    other = for_dataset("synthetic", (60,), 10)
    assert other.scale == 1.0 and other.label_names[3] == "3"


def test_props_round_trip_and_missing_metadata() -> None:
    pre = Preprocessing(input_shape=(3, 32, 32), scale=255.0, label_names=["a", "b"])
    assert from_props(to_props(pre), "m.onnx") == pre
    with pytest.raises(FedloomError, match="m.onnx has no fedloom.preprocessing metadata"):
        from_props({}, "m.onnx")
