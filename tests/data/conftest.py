"""Helpers that write tiny IDX files, so the loaders are tested without any real dataset."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

IdxWriter = Callable[..., Path]


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: two zero bytes, type 0x08, ndim, big-endian dims."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


@pytest.fixture
def write_idx() -> IdxWriter:
    def write(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
        raw = idx_bytes(array)
        target = path.with_name(path.name + ".gz") if gz else path
        target.write_bytes(gzip.compress(raw) if gz else raw)
        return target

    return write


@pytest.fixture
def tiny_idx_dir(tmp_path: Path, write_idx: IdxWriter) -> Path:
    """An MNIST-format folder: 40 train + 20 t10k images of 28x28, 10 balanced classes.

    Train files are plain and t10k files gzipped, so one folder covers both encodings.
    Pixel (i, 0, 0) is i, making every image identifiable after loading.
    """
    rng = np.random.default_rng(0)
    for prefix, count, gz in (("train", 40, False), ("t10k", 20, True)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = np.arange(count)
        labels = (np.arange(count) % 10).astype(np.uint8)
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", images, gz=gz)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", labels, gz=gz)
    return tmp_path
