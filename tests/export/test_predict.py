"""``fedloom predict`` on an npz, a folder of images and an IDX file: the stored
preprocessing turns each into what the model was trained on."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fedloom.cli import app
from fedloom.core.errors import DataError
from fedloom.export.model import ExportReport
from fedloom.export.predict import predict
from fedloom.export.run import load_run_model

COUNT = 40


@pytest.fixture(scope="module")
def digits(finished: Path) -> tuple[torch.nn.Module, np.ndarray]:
    """The run's model and 40 test images as raw pixel counts 0..16 (uint8)."""
    _, model, data = load_run_model(finished)
    raw = np.rint(data.test.x[:COUNT, 0].numpy() * 16).astype(np.uint8)
    return model, raw


def _expected(model: torch.nn.Module, x: np.ndarray) -> list[int]:
    with torch.no_grad():
        out = model(torch.from_numpy(x.astype(np.float32)).reshape(len(x), 1, 8, 8))
    return out.argmax(dim=1).tolist()


def test_npz_raw_and_scaled(exported: ExportReport, digits, tmp_path: Path) -> None:
    model, raw = digits
    want = _expected(model, raw / 16.0)
    np.savez(tmp_path / "raw.npz", x=raw)  # pixel counts: divided by the stored 16
    assert [p.label for p in predict(exported.path, tmp_path / "raw.npz")] == want
    np.savez(tmp_path / "scaled.npz", x=(raw / 16.0).astype(np.float32)[:, None])
    found = predict(exported.path, tmp_path / "scaled.npz")  # already in [0, 1]
    assert [p.label for p in found] == want
    assert [p.index for p in found] == list(range(COUNT))
    assert [p.name for p in found] == [str(k) for k in want]


def test_image_folder_to_csv(exported: ExportReport, digits, tmp_path: Path) -> None:
    model, raw = digits
    pixels = np.rint(raw.astype(np.float64) * 255 / 16).astype(np.uint8)
    folder = tmp_path / "images"
    (folder / "more").mkdir(parents=True)
    for i, image in enumerate(pixels):  # sorted by path: 00..29 first, then more/30..39
        where = folder / "more" if i >= 30 else folder
        Image.fromarray(image, mode="L").convert("RGB").save(where / f"{i:02d}.png")
    out = tmp_path / "predictions.csv"
    result = CliRunner().invoke(
        app, ["predict", str(exported.path), str(folder), "--csv", str(out)]
    )
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0] == "index,prediction,label_name"
    want = _expected(model, pixels / 255.0)
    assert lines[1:] == [f"{i},{k},{k}" for i, k in enumerate(want)]


def test_idx_file_printed(exported: ExportReport, digits, tmp_path: Path) -> None:
    model, raw = digits
    pixels = np.rint(raw.astype(np.float64) * 255 / 16).astype(np.uint8)
    header = struct.pack(">BBBB3I", 0, 0, 0x08, 3, *pixels.shape)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + pixels.tobytes()))
    result = CliRunner().invoke(app, ["predict", str(exported.path), str(path)])
    assert result.exit_code == 0, result.output
    want = _expected(model, pixels / 255.0)
    assert result.stdout.splitlines() == [f"{i},{k},{k}" for i, k in enumerate(want)]


def test_inputs_of_the_wrong_shape(exported: ExportReport, tmp_path: Path) -> None:
    np.savez(tmp_path / "wide.npz", x=np.zeros((2, 9, 9), dtype=np.uint8))
    with pytest.raises(DataError, match=r"inputs of shape \(9, 9\), the model takes \(1, 8, 8\)"):
        predict(exported.path, tmp_path / "wide.npz")
