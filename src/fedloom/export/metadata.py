"""What an exported model needs beside its weights: how to turn raw inputs into the tensor
it was trained on, and what its outputs mean. Stored inside the file (ONNX
``metadata_props``), so ``fedloom predict`` needs nothing else."""

from __future__ import annotations

import json
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedloom.core.errors import FedloomError

METADATA_KEY = "fedloom.preprocessing"

#: Raw value that the data loader maps to 1.0 (``x = raw / scale``), by dataset name.
RAW_SCALE: dict[str, float] = {
    "digits": 16.0,  # scikit-learn's digits: pixel counts 0..16
    "mnist": 255.0,
    "fashion_mnist": 255.0,
    "kmnist": 255.0,
    "cifar10": 255.0,
}

#: Class names by dataset, in label order; other datasets get "0", "1", ...
LABEL_NAMES: dict[str, list[str]] = {
    "fashion_mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],  # fmt: skip
    "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
    "cifar10": [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ],  # fmt: skip
}


class Preprocessing(BaseModel):
    """Inputs ``(N, *input_shape)`` of ``dtype``; a raw input becomes ``raw / scale``
    (8-bit images and IDX files are always ``/ 255``: every fedloom dataset is in [0, 1])."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_shape: tuple[int, ...]
    dtype: str = "float32"
    scale: float = Field(1.0, gt=0)
    label_names: list[str]
    data: str | None = None
    """The dataset the model was trained on, when it came from a run."""


def for_dataset(name: str | None, input_shape: tuple[int, ...], num_classes: int) -> Preprocessing:
    """The preprocessing fedloom's loader for dataset ``name`` applied."""
    names = LABEL_NAMES.get(name or "", [str(k) for k in range(num_classes)])
    if len(names) != num_classes:
        names = [str(k) for k in range(num_classes)]
    return Preprocessing(
        input_shape=tuple(input_shape),
        scale=RAW_SCALE.get(name or "", 1.0),
        label_names=names,
        data=name,
    )


def to_props(pre: Preprocessing) -> dict[str, str]:
    """``metadata_props`` entries: the whole record plus readable single keys."""
    return {
        METADATA_KEY: pre.model_dump_json(),
        "input_shape": json.dumps(list(pre.input_shape)),
        "input_dtype": pre.dtype,
        "input_scale": repr(pre.scale),
        "label_names": json.dumps(pre.label_names),
    }


def from_props(props: Mapping[str, str], source: str) -> Preprocessing:
    """The ``Preprocessing`` stored by ``to_props``; ``source`` names the file in errors."""
    if METADATA_KEY not in props:
        raise FedloomError(
            f"{source} has no {METADATA_KEY} metadata; export it with fedloom export "
            "(or fedloom.export.export_model)"
        )
    try:
        return Preprocessing.model_validate_json(props[METADATA_KEY])
    except ValidationError as error:
        first = error.errors()[0]["msg"]
        raise FedloomError(f"{source}: bad {METADATA_KEY} metadata ({first})") from None
