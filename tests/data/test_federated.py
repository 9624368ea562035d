"""load_federated and federate_tensors: the two ways to get a FederatedDataset."""

from __future__ import annotations

import pytest
import torch

from fedloom.core.errors import DataError
from fedloom.data.base import TensorData
from fedloom.data.config import DataConfig
from fedloom.data.federated import federate_tensors, load_federated


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards", "quantity"])
def test_load_federated_splits_the_whole_train_set(scheme: str) -> None:
    fed = load_federated(DataConfig(partition=scheme), num_clients=7, seed=0)
    assert fed.num_clients == 7
    assert sum(len(i) for i in fed.client_indices) == len(fed.train)
    assert fed.label_histogram().shape == (7, 10)
    again = load_federated(DataConfig(partition=scheme), num_clients=7, seed=0)
    assert all(
        torch.equal(a, b) for a, b in zip(fed.client_indices, again.client_indices, strict=True)
    )


def test_config_options_reach_the_scheme() -> None:
    def mean_labels_per_client(shards_per_client: int) -> float:
        cfg = DataConfig(partition="shards", shards_per_client=shards_per_client)
        fed = load_federated(cfg, 10, seed=0)
        return sum(len(torch.unique(fed.client(k).y)) for k in range(10)) / 10

    assert mean_labels_per_client(1) <= 2.5  # one label-sorted shard of ~144 samples
    assert mean_labels_per_client(5) >= 4.0


def test_load_federated_rejects_bad_client_count() -> None:
    with pytest.raises(DataError, match="positive int"):
        load_federated(DataConfig(), num_clients=0, seed=0)
    with pytest.raises(DataError, match="among 5000 clients"):
        load_federated(DataConfig(), num_clients=5000, seed=0)


def _user_data() -> tuple[TensorData, TensorData]:
    train = TensorData(torch.randn(30, 3, 4), torch.arange(30) % 4)
    test = TensorData(torch.randn(6, 3, 4), torch.tensor([0, 1, 2, 5, 1, 0]))
    return train, test


def test_federate_tensors_infers_classes_and_shape() -> None:
    train, test = _user_data()
    fed = federate_tensors(train, test, 3, DataConfig(partition="dirichlet", alpha=0.3), seed=2)
    assert fed.num_classes == 6  # label 5 appears only in test
    assert fed.input_shape == (3, 4)
    assert fed.label_histogram().shape == (3, 6)
    assert sorted(torch.cat(fed.client_indices).tolist()) == list(range(30))
    assert min(len(i) for i in fed.client_indices) >= 2  # cfg.min_client_size


def test_federate_tensors_defaults_to_iid_and_checks_inputs() -> None:
    train, test = _user_data()
    fed = federate_tensors(train, test, 4, DataConfig(), seed=0)
    assert sorted(len(i) for i in fed.client_indices) == [7, 7, 8, 8]
    with pytest.raises(DataError, match="no natural split"):
        federate_tensors(train, test, 4, DataConfig(name="synthetic", partition="natural"), 0)
    wrong_shape = TensorData(torch.randn(2, 12), torch.tensor([0, 1]))
    with pytest.raises(DataError, match="test inputs"):
        federate_tensors(train, wrong_shape, 4, DataConfig(), seed=0)
    negative = TensorData(torch.randn(2, 3, 4), torch.tensor([0, -1]))
    with pytest.raises(DataError, match=">= 0"):
        federate_tensors(train, negative, 4, DataConfig(), seed=0)
