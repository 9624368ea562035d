"""IDX parsing and the MNIST-format loaders, on tiny files written by the tests."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from fedloom.core.errors import DataError
from fedloom.data.config import DataConfig
from fedloom.data.federated import load_federated
from fedloom.data.idx import parse_idx, read_idx

from .conftest import IdxWriter, idx_bytes


@pytest.mark.parametrize("gz", [False, True])
def test_round_trip(tmp_path: Path, write_idx: IdxWriter, gz: bool) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "images-idx3-ubyte", array, gz=gz)
    assert path.name.endswith(".gz") == gz
    loaded = read_idx(path)
    assert loaded.shape == (2, 3, 4) and loaded.dtype == np.uint8
    assert np.array_equal(loaded, array)


def test_gzip_is_detected_by_content_not_suffix(tmp_path: Path) -> None:
    path = tmp_path / "labels-idx1-ubyte"  # gzipped data under a plain name
    path.write_bytes(gzip.compress(idx_bytes(np.array([7, 3, 9], dtype=np.uint8))))
    assert read_idx(path).tolist() == [7, 3, 9]


def test_header_values_are_big_endian() -> None:
    raw = bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 1, 0]) + bytes(512)
    assert parse_idx(raw, "x").shape == (2, 256)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x08\x03\x00\x00" + bytes(8), "bad IDX magic number 0x08030000"),
        (bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + bytes(4), "data type 0x0d"),
        (bytes([0, 0, 8, 3, 0, 0, 0, 2]), "header is truncated"),
        (
            bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]),
            "declares shape \\(5,\\).*holds 2; it is truncated",
        ),
        (bytes([0, 0, 8, 1, 0, 0, 0, 1, 1, 2]), "holds 2; it is corrupt"),
        (b"\x00", "not an IDX file"),
    ],
)
def test_malformed_files_name_the_file(tmp_path: Path, raw: bytes, message: str) -> None:
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(raw)
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_corrupt_gzip_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(100, np.uint8)))[:30])
    with pytest.raises(DataError, match="cannot read") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_load_train_and_test_files(tiny_idx_dir: Path) -> None:
    cfg = DataConfig(name="mnist", dir=str(tiny_idx_dir), partition="iid")
    fed = load_federated(cfg, num_clients=4, seed=0)
    assert fed.train.x.shape == (40, 1, 28, 28) and fed.test.x.shape == (20, 1, 28, 28)
    assert fed.input_shape == (1, 28, 28) and fed.num_classes == 10
    assert fed.train.x.dtype == torch.float32
    assert float(fed.train.x.min()) >= 0.0 and float(fed.train.x.max()) <= 1.0
    assert fed.train.x[:, 0, 0, 0].tolist() == pytest.approx([i / 255 for i in range(40)])
    assert fed.test.y.tolist() == [i % 10 for i in range(20)]
    assert [len(i) for i in fed.client_indices] == [10, 10, 10, 10]


def test_test_files_only_holds_out_a_stratified_fraction(tiny_idx_dir: Path) -> None:
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (tiny_idx_dir / name).unlink()
    cfg = DataConfig(name="fashion_mnist", dir=str(tiny_idx_dir), files="test", test_fraction=0.5)
    fed = load_federated(cfg, num_clients=2, seed=0)
    assert len(fed.train) == 10 and len(fed.test) == 10
    assert sorted(fed.test.y.tolist()) == list(range(10))  # one of each class's two
    ids = torch.cat([fed.train.x, fed.test.x])[:, 0, 0, 0] * 255
    assert sorted(ids.round().int().tolist()) == list(range(20))
    other_seed = load_federated(cfg, num_clients=2, seed=1)
    assert not torch.equal(fed.test.x, other_seed.test.x)


def test_missing_file_says_where_it_looked_and_where_to_get_it(tmp_path: Path) -> None:
    cfg = DataConfig(name="kmnist", dir=str(tmp_path))
    with pytest.raises(DataError) as info:
        load_federated(cfg, num_clients=2, seed=0)
    message = str(info.value)
    assert str(tmp_path / "train-images-idx3-ubyte") in message
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in message
    assert "github.com/rois-codh/kmnist" in message


def test_missing_train_files_suggest_test_only_mode(tiny_idx_dir: Path) -> None:
    (tiny_idx_dir / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match='set data.files to "test"'):
        load_federated(DataConfig(name="mnist", dir=str(tiny_idx_dir)), 2, 0)


def test_unset_or_missing_dir_is_explained(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.dir is not set"):
        load_federated(DataConfig(name="mnist"), 2, 0)
    with pytest.raises(DataError, match="not an existing folder"):
        load_federated(DataConfig(name="mnist", dir=str(tmp_path / "nope")), 2, 0)


def test_image_and_label_counts_must_match(tiny_idx_dir: Path, write_idx: IdxWriter) -> None:
    write_idx(tiny_idx_dir / "train-labels-idx1-ubyte", np.zeros(39, np.uint8))
    with pytest.raises(DataError, match="40 images but .* 39 labels"):
        load_federated(DataConfig(name="mnist", dir=str(tiny_idx_dir)), 2, 0)
