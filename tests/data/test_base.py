"""TensorData, FederatedDataset and from_torch_dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from fedloom.core.errors import DataError
from fedloom.data.base import FederatedDataset, TensorData, from_torch_dataset


def _data(n: int = 6) -> TensorData:
    return TensorData(torch.arange(n * 2, dtype=torch.float32).reshape(n, 2), torch.arange(n) % 3)


def test_tensor_data_len_and_subset() -> None:
    data = _data()
    part = data.subset(torch.tensor([4, 1]))
    assert len(data) == 6 and len(part) == 2
    assert part.x.tolist() == [[8.0, 9.0], [2.0, 3.0]]
    assert part.y.tolist() == [1, 1]


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, dtype=torch.int64), "float32"),
        (torch.zeros(3, 2), torch.zeros(3, dtype=torch.int32), "int64"),
        (torch.zeros(3, 2), torch.tensor(0), "shape"),
        (torch.zeros(4, 2), torch.zeros(3, dtype=torch.int64), "first dimension"),
    ],
)
def test_tensor_data_rejects_bad_tensors(x: torch.Tensor, y: torch.Tensor, message: str) -> None:
    with pytest.raises(DataError, match=message):
        TensorData(x, y)


def _federated(indices: list[list[int]]) -> FederatedDataset:
    data = _data()
    return FederatedDataset(
        train=data,
        test=data.subset(torch.tensor([0, 1])),
        client_indices=[torch.tensor(i, dtype=torch.int64) for i in indices],
        num_classes=3,
        input_shape=(2,),
    )


def test_federated_dataset_client_and_histogram() -> None:
    fed = _federated([[0, 3, 4], [1, 2, 5]])  # labels 0..5 % 3 = 0 1 2 0 1 2
    assert fed.num_clients == 2
    assert fed.client(1).y.tolist() == [1, 2, 2]
    histogram = fed.label_histogram()
    assert histogram.dtype == np.int64
    assert histogram.tolist() == [[2, 1, 0], [0, 1, 2]]
    with pytest.raises(DataError, match="client 2 does not exist"):
        fed.client(2)


@pytest.mark.parametrize("indices", [[[0, 1, 2], [2, 3, 4, 5]], [[0, 1], [3, 4, 5]]])
def test_federated_dataset_rejects_overlap_or_gaps(indices: list[list[int]]) -> None:
    with pytest.raises(DataError, match="disjoint and cover"):
        _federated(indices)


def test_federated_dataset_rejects_labels_outside_num_classes() -> None:
    data = _data()
    with pytest.raises(DataError, match="outside 0..1"):
        FederatedDataset(data, data, [torch.arange(6)], num_classes=2, input_shape=(2,))


def test_from_tensor_dataset_casts_dtypes() -> None:
    x = torch.arange(12, dtype=torch.uint8).reshape(3, 4)
    data = from_torch_dataset(TensorDataset(x, torch.tensor([2, 0, 1], dtype=torch.int32)))
    assert data.x.dtype == torch.float32 and data.y.dtype == torch.int64
    assert data.x[2].tolist() == [8.0, 9.0, 10.0, 11.0]  # values kept, not rescaled
    assert data.y.tolist() == [2, 0, 1]


def test_from_tensor_dataset_keeps_regression_targets_and_token_ids() -> None:
    data = from_torch_dataset(TensorDataset(torch.zeros(2, 3), torch.tensor([0.5, 1.25])))
    assert data.y.dtype == torch.float32 and data.y.tolist() == [0.5, 1.25]
    assert not data.has_labels
    tokens = torch.tensor([[3, 1, 4], [1, 5, 9]])
    lm = from_torch_dataset(TensorDataset(tokens, tokens.roll(-1, 1)), token_inputs=True)
    assert lm.x.dtype == torch.int64 and lm.x.tolist() == tokens.tolist()
    assert lm.y.shape == (2, 3) and lm.y.dtype == torch.int64
    with pytest.raises(DataError, match="boolean"):
        from_torch_dataset(TensorDataset(torch.zeros(2, 3), torch.tensor([True, False])))


class _Items(Dataset):
    def __init__(self, items: list[object]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> object:
        return self.items[i]


def test_from_custom_dataset_stacks_mixed_item_types() -> None:
    items = [
        (torch.tensor([[1, 2], [3, 4]]), 3),
        (np.array([[5.0, 6.0], [7.0, 8.0]]), np.int64(1)),
        ([[9, 10], [11, 12]], torch.tensor(0)),
    ]
    data = from_torch_dataset(_Items(items))
    assert data.x.shape == (3, 2, 2) and data.x.dtype == torch.float32
    assert data.x[:, 1, 1].tolist() == [4.0, 8.0, 12.0]
    assert data.y.tolist() == [3, 1, 0]


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([torch.zeros(2)], "expected a pair"),
        ([(torch.zeros(2), True)], "boolean"),
        ([(torch.zeros(2), "cat")], "not a number"),
        ([(torch.zeros(2), 1), (torch.zeros(2), torch.tensor([0, 1]))], "y of shape"),
        ([("abc", 1)], "not a numeric tensor"),
        ([(torch.zeros(2), 0), (torch.zeros(3), 1)], "item 1 has x of shape"),
        ([], "empty"),
    ],
)
def test_from_custom_dataset_errors_name_the_item(items: list[object], message: str) -> None:
    with pytest.raises(DataError, match=message):
        from_torch_dataset(_Items(items))
