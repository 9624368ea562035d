"""The bundled scikit-learn digits dataset."""

from __future__ import annotations

import numpy as np
import torch

from fedloom.data.config import DataConfig
from fedloom.data.federated import load_federated


def test_shapes_ranges_and_stratified_split() -> None:
    fed = load_federated(DataConfig(name="digits"), num_clients=5, seed=0)
    assert fed.input_shape == (1, 8, 8) and fed.num_classes == 10
    assert len(fed.train) + len(fed.test) == 1797
    assert len(fed.test) == 359  # round(0.2 * class size), summed over the 10 classes
    assert fed.train.x.dtype == torch.float32 and fed.train.y.dtype == torch.int64
    assert float(fed.train.x.min()) == 0.0 and float(fed.train.x.max()) == 1.0
    # pixel / 16 leaves multiples of 1/16
    assert torch.equal(fed.train.x * 16, (fed.train.x * 16).round())
    test_counts = np.bincount(fed.test.y.numpy(), minlength=10)
    assert test_counts.min() >= 35 and test_counts.max() <= 37
    assert fed.label_histogram().sum() == len(fed.train)


def test_held_out_split_depends_on_seed_and_fraction() -> None:
    a = load_federated(DataConfig(), 3, seed=0)
    b = load_federated(DataConfig(), 3, seed=0)
    c = load_federated(DataConfig(), 3, seed=1)
    assert torch.equal(a.test.x, b.test.x) and not torch.equal(a.test.x, c.test.x)
    half = load_federated(DataConfig(test_fraction=0.5), 3, seed=0)
    assert abs(len(half.test) - 1797 / 2) <= 5
