"""MNIST-format (IDX) datasets: MNIST, Fashion-MNIST and KMNIST from local files.

The files keep their official names (``train-images-idx3-ubyte`` ...), plain or gzipped.
Images become ``(N, 1, rows, cols)`` float32 pixels / 255 in [0, 1]; no mean/std
normalisation is applied, so every fedloom dataset shares the [0, 1] range and a model
that wants standardised inputs normalises them itself.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from fedloom.core.errors import DataError
from fedloom.core.seeding import numpy_rng
from fedloom.data.base import TensorData
from fedloom.data.config import DataConfig
from fedloom.data.registry import LoadedData, require_data_dir
from fedloom.data.split import stratified_holdout

#: Where each dataset's IDX files can be downloaded by hand.
IDX_SOURCES: dict[str, str] = {
    "mnist": "http://yann.lecun.com/exdb/mnist/ (or the mirror "
    "https://ossci-datasets.s3.amazonaws.com/mnist/)",
    "fashion_mnist": "https://github.com/zalandoresearch/fashion-mnist (data/fashion)",
    "kmnist": "https://github.com/rois-codh/kmnist (the MNIST-format files)",
}
IDX_CLASSES = 10
_UNSIGNED_BYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"


def parse_idx(raw: bytes, source: str) -> np.ndarray:
    """Decode IDX bytes (unsigned-byte data only) into an array shaped by the header.

    ``source`` names the file in error messages.
    """
    if len(raw) < 4:
        raise DataError(f"{source}: not an IDX file (only {len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(
            f"{source}: bad IDX magic number 0x{raw[:4].hex()} (it must start with two zero "
            "bytes); the file is not IDX data or is corrupt"
        )
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != _UNSIGNED_BYTE:
        raise DataError(
            f"{source}: IDX data type 0x{dtype_code:02x} is not supported; "
            "MNIST-format files use 0x08 (unsigned byte)"
        )
    header_size = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header_size:
        raise DataError(f"{source}: IDX header is truncated or declares {ndim} dimensions")
    dims = struct.unpack(f">{ndim}I", raw[4:header_size])
    expected, found = math.prod(dims), len(raw) - header_size
    if found != expected:
        raise DataError(
            f"{source}: IDX header declares shape {dims} ({expected} bytes of data) but the "
            f"file holds {found}; it is {'truncated' if found < expected else 'corrupt'}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file; gzip is detected from the content, not the suffix."""
    try:
        raw = path.read_bytes()
        if raw[:2] == _GZIP_MAGIC:
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: cannot read ({err}); re-download the file") from err
    return parse_idx(raw, str(path))


def find_idx_file(directory: Path, stem: str, dataset: str) -> Path:
    """``directory/stem`` or ``directory/stem.gz``, whichever exists (plain first)."""
    candidates = (directory / stem, directory / f"{stem}.gz")
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(
        f"{dataset}: file not found: looked for {candidates[0]} and {candidates[1]}. "
        f"Download {stem}.gz from {IDX_SOURCES[dataset]} and put it in {directory} "
        "(gzipped or unpacked both work)."
    )


def read_idx_split(directory: Path, prefix: str, dataset: str) -> TensorData:
    """The ``prefix`` ("train" or "t10k") images and labels as one ``TensorData``."""
    images_path = find_idx_file(directory, f"{prefix}-images-idx3-ubyte", dataset)
    labels_path = find_idx_file(directory, f"{prefix}-labels-idx1-ubyte", dataset)
    return read_idx_pair(images_path, labels_path)


def read_idx_pair(images_path: Path, labels_path: Path) -> TensorData:
    """An IDX images file (N, rows, cols) and its labels file as one ``TensorData``:
    pixels scaled to [0, 1], one channel."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise DataError(f"{images_path}: expected images (N, rows, cols), got {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: expected labels (N,), got shape {labels.shape}")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels; the files do not belong together"
        )
    if len(labels) and int(labels.max()) >= IDX_CLASSES:
        raise DataError(f"{labels_path}: label {int(labels.max())} is not a class 0..9")
    pixels = images.astype(np.float32) / np.float32(255.0)
    return TensorData(
        torch.from_numpy(pixels).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
    )


def load_idx_dataset(cfg: DataConfig, num_clients: int, seed: int, *, dataset: str) -> LoadedData:
    """Official train/test files, or with ``files="test"`` a stratified split of t10k."""
    directory = require_data_dir(cfg)
    if cfg.files == "test":
        t10k = read_idx_split(directory, "t10k", dataset)
        train_idx, test_idx = stratified_holdout(
            t10k.y.numpy(), cfg.test_fraction, numpy_rng(seed, "data", dataset, "holdout")
        )
        return LoadedData(
            train=t10k.subset(torch.from_numpy(train_idx)),
            test=t10k.subset(torch.from_numpy(test_idx)),
            num_classes=IDX_CLASSES,
        )
    try:
        train = read_idx_split(directory, "train", dataset)
    except DataError as err:
        if _has_t10k_only(directory):
            raise DataError(
                f"{err} Only the t10k (test) files are in {directory}: set data.files to "
                '"test" to train and evaluate on a split of them.'
            ) from err
        raise
    return LoadedData(train, read_idx_split(directory, "t10k", dataset), IDX_CLASSES)


def _has_t10k_only(directory: Path) -> bool:
    def present(stem: str) -> bool:
        return (directory / stem).is_file() or (directory / f"{stem}.gz").is_file()

    has_test = present("t10k-images-idx3-ubyte") and present("t10k-labels-idx1-ubyte")
    has_train = present("train-images-idx3-ubyte") and present("train-labels-idx1-ubyte")
    return has_test and not has_train


def load_idx(cfg: DataConfig, num_clients: int, seed: int) -> LoadedData:
    """The IDX dataset ``cfg.name`` (mnist, fashion_mnist, kmnist)."""
    return load_idx_dataset(cfg, num_clients, seed, dataset=cfg.name)
