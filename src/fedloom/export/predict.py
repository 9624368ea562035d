"""``fedloom predict``: run an exported model on a folder of images, an npz or an IDX
file, preprocessed as the file's metadata says (the first smoke test on a device)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedloom.core.errors import ConfigError, DataError
from fedloom.data.idx import read_idx
from fedloom.export.metadata import Preprocessing, from_props
from fedloom.export.model import runner_for
from fedloom.export.pte import sidecar
from fedloom.export.torchscript import read_props
from fedloom.export.verify import open_session

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
PIXEL_MAX = 255.0
"""8-bit images and IDX files: every fedloom dataset maps them to [0, 1]."""


@dataclass(frozen=True)
class Prediction:
    index: int
    label: int
    name: str


def _images(folder: Path, pre: Preprocessing) -> np.ndarray:
    from PIL import Image

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if len(pre.input_shape) != 3:
        raise DataError(f"the model takes inputs of shape {pre.input_shape}, not images")
    channels, height, width = pre.input_shape
    xs = []
    for file in files:
        with Image.open(file) as opened:
            image = opened.convert("L" if channels == 1 else "RGB").resize((width, height))
        pixels = np.asarray(image, dtype=np.float32) / np.float32(PIXEL_MAX)
        xs.append(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))
    return np.stack(xs)


def _npz(path: Path, pre: Preprocessing, scale: float | None) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        keys = sorted(archive)
        key = "x" if "x" in keys else keys[0] if len(keys) == 1 else None
        if key is None:
            raise DataError(f"{path}: no array 'x' among {keys}")
        raw = archive[key]
    if scale is not None and not scale > 0:
        raise ConfigError([f"--scale must be positive, got {scale}"])
    if scale is None:  # raw values (integers, or floats above 1) are scaled as in training
        scale = pre.scale if raw.dtype.kind in "iu" or float(np.max(raw, initial=0)) > 1 else 1.0
    return raw.astype(np.float32) / np.float32(scale)


def _idx(path: Path) -> np.ndarray:
    images = read_idx(path)
    if images.ndim != 3:
        raise DataError(f"{path}: expected IDX images (N, rows, cols), got {images.shape}")
    return images.astype(np.float32)[:, None] / np.float32(PIXEL_MAX)


def read_inputs(path: Path, pre: Preprocessing, scale: float | None = None) -> np.ndarray:
    """``path`` as a float32 batch ``(N, *pre.input_shape)``: a folder of images (sorted by
    path, resized and converted to the model's channels), an ``.npz`` (array ``x``, or its
    only array; ``scale`` overrides the stored one) or an IDX images file (plain or gz)."""
    if path.is_dir():
        x = _images(path, pre)
    elif not path.is_file():
        raise DataError(f"{path} does not exist")
    elif path.suffix == ".npz":
        x = _npz(path, pre, scale)
    else:
        x = _idx(path)
    shape = tuple(pre.input_shape)
    if x.shape[1:] != shape:
        if x.ndim < 2 or int(np.prod(x.shape[1:])) != int(np.prod(shape)):
            raise DataError(f"{path}: inputs of shape {x.shape[1:]}, the model takes {shape}")
        x = x.reshape(len(x), *shape)
    return np.ascontiguousarray(x, dtype=np.float32)


def _stored(model_file: Path) -> Preprocessing:
    if model_file.suffix == ".pt":
        props = read_props(model_file)
    elif model_file.suffix == ".pte":
        meta = sidecar(model_file)
        if not meta.is_file():
            raise DataError(f"{model_file}: its preprocessing file {meta.name} is missing")
        props = json.loads(meta.read_text())
    else:
        props = open_session(model_file).get_modelmeta().custom_metadata_map
    return from_props(props, str(model_file))


def predict(model_file: Path, inputs: Path, scale: float | None = None) -> list[Prediction]:
    """The top-1 class of every input in ``inputs`` under the exported ``model_file``
    (ONNX, or ExecuTorch ``.pte`` with its JSON beside it)."""
    if not model_file.is_file():
        raise DataError(f"{model_file} does not exist")
    pre = _stored(model_file)
    logits = runner_for(model_file)(read_inputs(inputs, pre, scale))
    labels = logits.argmax(axis=1)
    names = pre.label_names
    return [
        Prediction(i, int(k), names[k] if k < len(names) else str(k)) for i, k in enumerate(labels)
    ]


def as_csv(predictions: list[Prediction], header: bool) -> str:
    """``index,prediction,label_name`` lines (with a header line when ``header``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(["index", "prediction", "label_name"])
    writer.writerows((p.index, p.label, p.name) for p in predictions)
    return buffer.getvalue()
