"""Partition schemes: exact cover, seeding, and the skew each scheme is meant to create."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedloom.core.errors import DataError
from fedloom.core.registry import REGISTRY
from fedloom.data.partition import partition

# Options that keep every scheme feasible on the small random label sets drawn below.
SCHEME_OPTIONS: dict[str, dict[str, Any]] = {
    "iid": {},
    "dirichlet": {"alpha": 1.0, "min_client_size": 1},
    "shards": {"shards_per_client": 2},
    "quantity": {"quantity_sigma": 1.0},
}


def test_every_registered_scheme_is_covered_here() -> None:
    assert set(REGISTRY.names("partitioner")) == set(SCHEME_OPTIONS)


def _assert_exact_cover(parts: list[torch.Tensor], num_samples: int, num_clients: int) -> None:
    assert len(parts) == num_clients
    for part in parts:
        assert part.dtype == torch.int64 and part.ndim == 1
        assert torch.equal(part, torch.sort(part).values)
    everything = torch.cat(parts)
    assert torch.equal(torch.sort(everything).values, torch.arange(num_samples))


@settings(max_examples=40, deadline=None)
@given(
    scheme=st.sampled_from(sorted(SCHEME_OPTIONS)),
    labels=st.lists(st.integers(0, 9), min_size=20, max_size=300),
    clients_fraction=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31),
)
def test_every_sample_has_exactly_one_client_and_seed_fixes_the_split(
    scheme: str, labels: list[int], clients_fraction: float, seed: int
) -> None:
    label_tensor = torch.tensor(labels)
    # Up to one client per 10 samples keeps 2 shards/client and dirichlet's minimum feasible.
    num_clients = 1 + int(clients_fraction * (len(labels) // 10 - 1))
    options = SCHEME_OPTIONS[scheme]
    first = partition(label_tensor, num_clients, scheme, seed, **options)
    again = partition(label_tensor, num_clients, scheme, seed, **options)
    _assert_exact_cover(first, len(labels), num_clients)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


@pytest.mark.parametrize("scheme", sorted(SCHEME_OPTIONS))
def test_different_seeds_give_different_splits(scheme: str) -> None:
    labels = torch.arange(200) % 10
    options = SCHEME_OPTIONS[scheme]
    a = partition(labels, 8, scheme, seed=0, **options)
    b = partition(labels, 8, scheme, seed=1, **options)
    assert any(not torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _mean_top_class_share(parts: list[torch.Tensor], labels: torch.Tensor) -> float:
    shares = [np.bincount(labels[p].numpy(), minlength=10).max() / len(p) for p in parts]
    return float(np.mean(shares))


def test_dirichlet_small_alpha_is_skewed_large_alpha_is_not() -> None:
    labels = torch.arange(2000) % 10
    skewed = partition(labels, 10, "dirichlet", seed=3, alpha=0.05)
    even = partition(labels, 10, "dirichlet", seed=3, alpha=100.0)
    assert _mean_top_class_share(skewed, labels) > 0.6
    assert _mean_top_class_share(even, labels) < 0.2  # 0.1 is perfectly balanced


def test_dirichlet_redraws_until_min_client_size_holds() -> None:
    labels = torch.arange(300) % 10
    # At alpha=0.05 a single draw leaves some client below 2 samples about 60% of the time.
    constrained = [
        min(len(p) for p in partition(labels, 10, "dirichlet", s, alpha=0.05, min_client_size=2))
        for s in range(10)
    ]
    free = [
        min(len(p) for p in partition(labels, 10, "dirichlet", s, alpha=0.05, min_client_size=0))
        for s in range(10)
    ]
    assert min(constrained) >= 2
    assert min(free) < 2


def test_dirichlet_gives_up_after_bounded_attempts() -> None:
    labels = torch.arange(10) % 2
    with pytest.raises(DataError, match="in 5 draws"):
        partition(labels, 5, "dirichlet", seed=0, alpha=0.001, min_client_size=2, max_attempts=5)
    with pytest.raises(DataError, match="cannot give 6 clients 2 samples"):
        partition(labels, 6, "dirichlet", seed=0, min_client_size=2)


def test_shards_give_at_most_two_labels_when_shards_align() -> None:
    labels = torch.arange(200) % 10  # 20 per label; 20 shards of 10 never straddle labels
    parts = partition(labels, 10, "shards", seed=5, shards_per_client=2)
    assert [len(p) for p in parts] == [20] * 10
    assert all(len(torch.unique(labels[p])) <= 2 for p in parts)
    assert sum(len(torch.unique(labels[p])) == 2 for p in parts) >= 5


def test_iid_sizes_differ_by_at_most_one() -> None:
    parts = partition(torch.zeros(103, dtype=torch.int64), 10, "iid", seed=0)
    assert sorted(len(p) for p in parts) == [10] * 7 + [11] * 3


def test_quantity_sizes_vary_and_stay_positive() -> None:
    labels = torch.arange(1000) % 10
    sizes = [len(p) for p in partition(labels, 10, "quantity", seed=0, quantity_sigma=1.0)]
    assert sum(sizes) == 1000 and min(sizes) >= 1
    assert max(sizes) / min(sizes) > 3
    flat = [len(p) for p in partition(labels, 10, "quantity", seed=0, quantity_sigma=0.01)]
    assert max(flat) - min(flat) <= 4


def test_quantity_gives_every_client_one_sample_when_clients_equal_samples() -> None:
    parts = partition(torch.zeros(50, dtype=torch.int64), 50, "quantity", 0, quantity_sigma=5.0)
    assert [len(p) for p in parts] == [1] * 50


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: partition(torch.zeros(5, dtype=torch.int64), 6, "iid", 0), "5 samples among 6"),
        (lambda: partition(torch.zeros(5, dtype=torch.int64), 0, "iid", 0), "positive int"),
        (lambda: partition(torch.zeros(5, dtype=torch.int64), 2, "random", 0), "unknown"),
        (lambda: partition(torch.zeros(5, dtype=torch.int64), 2, "natural", 0), "natural"),
        (lambda: partition(torch.zeros(5), 2, "iid", 0), "integer"),
        (lambda: partition(torch.zeros(5, dtype=torch.int64), 2, "iid", 0, alpha=1), "alpha"),
        (lambda: partition(torch.zeros(9, dtype=torch.int64), 5, "shards", 0), "10 shards"),
    ],
)
def test_partition_errors(call: Any, message: str) -> None:
    with pytest.raises(DataError, match=message):
        call()
