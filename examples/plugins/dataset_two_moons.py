"""A dataset plugin: scikit-learn's two interleaving half circles, generated (no download).

    fedloom run --import examples/plugins/dataset_two_moons.py data.name=two_moons \
        model.name=logreg

It has no per-device split of its own, so it declares no ``natural`` capability and
fedloom divides its train split by ``data.partition`` (iid by default).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import make_moons
from sklearn.model_selection import train_test_split

import fedloom
from fedloom.data.base import TensorData
from fedloom.data.config import DataConfig
from fedloom.data.registry import LoadedData

SAMPLES = 2000
NOISE = 0.2


@fedloom.register("dataset", "two_moons")
def two_moons(cfg: DataConfig, num_clients: int, seed: int) -> LoadedData:
    x, y = make_moons(SAMPLES, noise=NOISE, random_state=seed)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=cfg.test_fraction, random_state=seed, stratify=y
    )

    def split(x_part: np.ndarray, y_part: np.ndarray) -> TensorData:
        return TensorData(torch.tensor(x_part, dtype=torch.float32), torch.tensor(y_part))

    return LoadedData(split(x_train, y_train), split(x_test, y_test), num_classes=2)
