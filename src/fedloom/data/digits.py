"""scikit-learn's bundled 8x8 handwritten digits: offline, tiny, the default for smoke runs."""

from __future__ import annotations

import numpy as np
import torch

from fedloom.core.seeding import numpy_rng
from fedloom.data.base import TensorData
from fedloom.data.config import DataConfig
from fedloom.data.registry import LoadedData
from fedloom.data.split import stratified_holdout

DIGITS_CLASSES = 10


def load_digits_dataset(cfg: DataConfig, num_clients: int, seed: int) -> LoadedData:
    """1797 images as ``(N, 1, 8, 8)`` float32 in [0, 1] (pixel / 16), no mean/std shift.

    There is no official test split, so a stratified ``cfg.test_fraction`` is held out,
    drawn from ``seed``.
    """
    # Imported here: scikit-learn takes ~1.5 s to import, which every `import fedloom`
    # (and every CLI call) would otherwise pay even when it never touches digits.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0)
    labels = np.asarray(bunch.target, dtype=np.int64)
    everything = TensorData(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels))
    train_idx, test_idx = stratified_holdout(
        labels, cfg.test_fraction, numpy_rng(seed, "data", "digits", "holdout")
    )
    return LoadedData(
        train=everything.subset(torch.from_numpy(train_idx)),
        test=everything.subset(torch.from_numpy(test_idx)),
        num_classes=DIGITS_CLASSES,
    )
