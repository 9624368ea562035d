"""CIFAR-10 through torchvision's reader, from a local copy (never downloaded at run time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedloom.core.errors import DataError
from fedloom.data.base import TensorData
from fedloom.data.config import DataConfig
from fedloom.data.registry import LoadedData, require_data_dir

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
CIFAR10_CLASSES = 10


def _cifar10_class() -> Any:
    try:
        from torchvision.datasets import CIFAR10
    except ImportError as err:
        raise DataError(
            'data.name="cifar10" needs torchvision, which is not installed: '
            'pip install "fedloom[vision]"'
        ) from err
    return CIFAR10


def load_cifar10(cfg: DataConfig, num_clients: int, seed: int) -> LoadedData:
    """The official 50k/10k split as ``(N, 3, 32, 32)`` float32 in [0, 1], no mean/std shift.

    ``cfg.dir`` is the folder that contains ``cifar-10-batches-py/``.
    """
    cifar10 = _cifar10_class()
    root = require_data_dir(cfg)
    return LoadedData(
        train=_read_split(cifar10, root, train=True),
        test=_read_split(cifar10, root, train=False),
        num_classes=CIFAR10_CLASSES,
    )


def _read_split(cifar10: Any, root: Path, *, train: bool) -> TensorData:
    try:
        ds = cifar10(root=str(root), train=train, download=False)
    except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
        raise DataError(
            f"CIFAR-10 not found or corrupt under {root}: expected {root / 'cifar-10-batches-py'} "
            f'holding the unpacked "CIFAR-10 python version" from {CIFAR10_URL} ({err})'
        ) from err
    # torchvision keeps the raw uint8 pixels as (N, 32, 32, 3); reading them directly skips
    # 60k PIL round-trips through __getitem__.
    pixels = torch.from_numpy(np.ascontiguousarray(ds.data, dtype=np.uint8))
    x = pixels.permute(0, 3, 1, 2).to(torch.float32).div_(255.0).contiguous()
    return TensorData(x, torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64))
