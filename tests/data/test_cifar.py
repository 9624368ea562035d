"""CIFAR-10 goes through torchvision, which is optional."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fedloom.core.errors import DataError
from fedloom.data.config import DataConfig
from fedloom.data.federated import load_federated


def test_missing_torchvision_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import now raises ImportError
    with pytest.raises(DataError, match=r'pip install "fedloom\[vision\]"'):
        load_federated(DataConfig(name="cifar10", dir=str(tmp_path)), 2, 0)


def _write_batch(path: Path, count: int, first_label: int) -> None:
    data = np.zeros((count, 3 * 32 * 32), dtype=np.uint8)
    data[:, 0] = 255  # red channel, pixel (0, 0)
    labels = [(first_label + i) % 10 for i in range(count)]
    path.write_bytes(pickle.dumps({"data": data, "labels": labels}))


def test_reads_pixels_channel_first_in_unit_range(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cifar = pytest.importorskip("torchvision.datasets.cifar")
    # Tiny fake batches cannot match torchvision's md5 checks; skip them for this test only.
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        _write_batch(folder / f"data_batch_{i}", 4, first_label=i)
    _write_batch(folder / "test_batch", 6, first_label=0)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list("abcdefghij")}))
    fed = load_federated(DataConfig(name="cifar10", dir=str(tmp_path)), 4, 0)
    assert fed.train.x.shape == (20, 3, 32, 32) and fed.test.x.shape == (6, 3, 32, 32)
    assert fed.train.x.dtype == torch.float32
    assert torch.all(fed.train.x[:, 0, 0, 0] == 1.0)
    assert float(fed.train.x[:, 1:].max()) == 0.0
    assert fed.test.y.tolist() == [0, 1, 2, 3, 4, 5]
