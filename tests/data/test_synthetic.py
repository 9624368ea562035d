"""FedProx Synthetic(alpha, beta) with its natural per-device split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedloom.core.seeding import numpy_rng
from fedloom.data.config import DataConfig
from fedloom.data.federated import load_federated
from fedloom.data.synthetic import MAX_SAMPLES_PER_DEVICE, device_sample_count


def test_shapes_natural_split_and_pooled_test() -> None:
    fed = load_federated(DataConfig(name="synthetic"), num_clients=20, seed=0)
    assert fed.input_shape == (60,) and fed.num_classes == 10
    assert fed.train.x.dtype == torch.float32
    assert fed.num_clients == 20
    sizes = np.array([len(i) for i in fed.client_indices])
    # each device keeps ~80% of its 50..1000 samples
    assert sizes.min() >= 40 and sizes.max() <= 800
    assert len(fed.test) == pytest.approx(0.25 * len(fed.train), rel=0.05)
    # client k owns one contiguous block: its device's samples
    assert all(torch.equal(i, torch.arange(int(i[0]), int(i[-1]) + 1)) for i in fed.client_indices)
    assert len(torch.unique(fed.train.y)) >= 6


def test_devices_are_heterogeneous_in_size_and_labels() -> None:
    fed = load_federated(DataConfig(name="synthetic"), num_clients=30, seed=1)
    sizes = np.array([len(i) for i in fed.client_indices])
    assert sizes.max() > 3 * sizes.min()
    top_share = fed.label_histogram().max(axis=1) / sizes
    assert np.mean(top_share) > 0.5  # each device's own model favours few classes


def test_sample_counts_follow_the_reference_lognormal() -> None:
    counts = np.array([device_sample_count(numpy_rng(0, "count", k)) for k in range(2000)])
    assert counts.min() >= 50 and counts.max() == MAX_SAMPLES_PER_DEVICE
    # median of int(lognormal(4, 2)) + 50 is about e^4 + 50 = 104.6
    assert 95 <= np.median(counts) <= 115
    assert 0.05 < np.mean(counts == MAX_SAMPLES_PER_DEVICE) < 0.10


def test_seeded_and_device_k_independent_of_device_count() -> None:
    small = load_federated(DataConfig(name="synthetic"), num_clients=3, seed=4)
    large = load_federated(DataConfig(name="synthetic"), num_clients=5, seed=4)
    again = load_federated(DataConfig(name="synthetic"), num_clients=3, seed=4)
    other = load_federated(DataConfig(name="synthetic"), num_clients=3, seed=5)
    assert torch.equal(small.train.x, again.train.x)
    assert torch.equal(small.client(2).x, large.client(2).x)
    assert not torch.equal(small.client(0).x[:10], other.client(0).x[:10])


def test_alpha_beta_zero_shares_model_and_input_mean_priors() -> None:
    cfg = DataConfig(name="synthetic", synthetic_alpha=0.0, synthetic_beta=0.0)
    fed = load_federated(cfg, num_clients=4, seed=0)
    means = torch.stack([fed.client(k).x.mean(0) for k in range(4)])
    # centres v_k ~ N(0, 1) per feature; the last features have std 60^-0.6 ~ 0.09
    assert float(means.mean()) == pytest.approx(0.0, abs=0.5)
