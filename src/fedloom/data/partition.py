"""Label-based partition schemes: split a train set's sample indices among clients.

Each scheme is a pure function ``(labels, num_clients, rng, **options) -> index tensors``
registered by name (kind ``partitioner``, declared in ``fedloom.builtins``);
``partition()`` validates inputs, derives the seeded generator and dispatches. Every
scheme returns disjoint, sorted int64 index tensors that together cover
``range(len(labels))``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fedloom.core.errors import DataError
from fedloom.core.registry import REGISTRY
from fedloom.core.seeding import numpy_rng

PartitionFn = Callable[..., list[torch.Tensor]]


def register_partition(name: str) -> Callable[[PartitionFn], PartitionFn]:
    """Register ``fn`` under ``name`` (``@fedloom.register("partitioner", name)``); its
    keyword-only parameters are its options."""
    return REGISTRY.register("partitioner", name)


def scheme_options(scheme: str) -> tuple[str, ...]:
    """Names of the options ``scheme`` accepts (its keyword-only parameters)."""
    params = inspect.signature(_lookup(scheme)).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def partition(
    labels: torch.Tensor | np.ndarray,
    num_clients: int,
    scheme: str,
    seed: int,
    **options: Any,
) -> list[torch.Tensor]:
    """Split ``range(len(labels))`` among ``num_clients`` clients with a named scheme.

    The same (labels, num_clients, scheme, seed, options) always gives the same split.
    Options: dirichlet ``alpha``, ``min_client_size``, ``max_attempts``; shards
    ``shards_per_client``; quantity ``quantity_sigma``.
    """
    label_array = _as_label_array(labels)
    if scheme == "natural":
        raise DataError(
            'the "natural" partition is a dataset\'s own per-device split (data.name='
            '"synthetic"); it cannot be computed from labels'
        )
    fn = _lookup(scheme)
    unknown = sorted(set(options) - set(scheme_options(scheme)))
    if unknown:
        raise DataError(
            f"partition scheme {scheme!r} has no option(s) {unknown}; "
            f"it accepts {list(scheme_options(scheme))}"
        )
    _check_num_clients(num_clients, len(label_array))
    return fn(label_array, num_clients, numpy_rng(seed, "partition", scheme), **options)


def _lookup(scheme: str) -> PartitionFn:
    if scheme not in REGISTRY.names("partitioner"):
        known = REGISTRY.names("partitioner")
        raise DataError(f"unknown partition scheme {scheme!r}; known: {known}")
    return REGISTRY.lookup("partitioner", scheme)  # type: ignore[no-any-return]


def _as_label_array(labels: torch.Tensor | np.ndarray) -> np.ndarray:
    array = (
        labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    )
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise DataError(
            f"labels must be a 1-D integer tensor, got shape {array.shape} dtype {array.dtype}"
        )
    return array.astype(np.int64, copy=False)


def _check_num_clients(num_clients: int, num_samples: int) -> None:
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        raise DataError(f"num_clients must be a positive int, got {num_clients!r}")
    if num_clients > num_samples:
        raise DataError(
            f"cannot split {num_samples} samples among {num_clients} clients; "
            "use fewer clients or more data"
        )


def _to_tensors(parts: list[np.ndarray]) -> list[torch.Tensor]:
    return [torch.from_numpy(np.sort(part).astype(np.int64)) for part in parts]


def iid_partition(
    labels: np.ndarray, num_clients: int, rng: np.random.Generator
) -> list[torch.Tensor]:
    """A random permutation cut into near-equal parts (sizes differ by at most one)."""
    return _to_tensors(np.array_split(rng.permutation(len(labels)), num_clients))


def dirichlet_partition(
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    *,
    alpha: float = 0.5,
    min_client_size: int = 2,
    max_attempts: int = 100,
) -> list[torch.Tensor]:
    """Label skew: each class is split among clients by proportions drawn from Dir(alpha).

    Small alpha gives each client a few dominant classes. A draw in which some client gets
    fewer than ``min_client_size`` samples is discarded and redrawn, at most
    ``max_attempts`` times (Hsu et al. 2019; Li et al. 2022, NIID-Bench).
    """
    if not alpha > 0:
        raise DataError(f"dirichlet alpha must be > 0, got {alpha}")
    if min_client_size < 0 or max_attempts < 1:
        raise DataError("min_client_size must be >= 0 and max_attempts >= 1")
    if num_clients * min_client_size > len(labels):
        raise DataError(
            f"cannot give {num_clients} clients {min_client_size} samples each from "
            f"{len(labels)} samples; lower data.min_client_size or the number of clients"
        )
    members = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    for _ in range(max_attempts):
        parts = _dirichlet_draw(members, num_clients, alpha, rng)
        if min(len(part) for part in parts) >= min_client_size:
            return _to_tensors(parts)
    raise DataError(
        f"dirichlet(alpha={alpha}) left some client with fewer than {min_client_size} samples "
        f"in {max_attempts} draws; raise data.alpha, lower data.min_client_size, "
        "or use fewer clients"
    )


def _dirichlet_draw(
    members: list[np.ndarray], num_clients: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    buckets: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for class_indices in members:
        shuffled = rng.permutation(class_indices)
        shares = rng.dirichlet(np.full(num_clients, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(shuffled)).astype(np.int64)
        for bucket, piece in zip(buckets, np.split(shuffled, cuts), strict=True):
            bucket.append(piece)
    return [np.concatenate(bucket) for bucket in buckets]


def shard_partition(
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    *,
    shards_per_client: int = 2,
) -> list[torch.Tensor]:
    """Pathological non-IID of McMahan et al. 2017: sort by label, deal out random shards.

    The data is sorted by label, cut into ``num_clients * shards_per_client`` contiguous
    shards of near-equal size, and each client gets ``shards_per_client`` random shards, so
    it sees only a few labels. Ties within a label are shuffled first, so the seed also
    decides which samples of a label land in which shard.
    """
    num_shards = num_clients * shards_per_client
    if shards_per_client < 1:
        raise DataError(f"shards_per_client must be >= 1, got {shards_per_client}")
    if num_shards > len(labels):
        raise DataError(
            f"{num_clients} clients x {shards_per_client} shards = {num_shards} shards, "
            f"more than the {len(labels)} samples; lower data.shards_per_client"
        )
    shuffled = rng.permutation(len(labels))
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    shards = np.array_split(by_label, num_shards)
    owners = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
    return _to_tensors([np.concatenate([shards[s] for s in row]) for row in owners])


def quantity_partition(
    labels: np.ndarray,
    num_clients: int,
    rng: np.random.Generator,
    *,
    quantity_sigma: float = 1.0,
) -> list[torch.Tensor]:
    """Quantity skew: IID labels, client sizes proportional to lognormal(0, sigma) draws.

    Every client gets at least one sample; the rest is shared by largest remainder.
    """
    if not quantity_sigma > 0:
        raise DataError(f"quantity_sigma must be > 0, got {quantity_sigma}")
    # Normalised lognormal weights, computed in log space so a large sigma cannot overflow.
    log_weights = rng.normal(0.0, quantity_sigma, num_clients)
    weights = np.exp(log_weights - log_weights.max())
    sizes = _allocate(len(labels), weights)
    return _to_tensors(np.split(rng.permutation(len(labels)), np.cumsum(sizes)[:-1]))


def _allocate(total: int, weights: np.ndarray) -> np.ndarray:
    """Integer sizes >= 1 summing to ``total``, proportional to ``weights``."""
    spare = total - len(weights)
    exact = weights / weights.sum() * spare
    sizes = np.floor(exact).astype(np.int64)
    leftover = spare - int(sizes.sum())
    largest_remainders = np.argsort(-(exact - sizes), kind="stable")[:leftover]
    sizes[largest_remainders] += 1
    return sizes + 1
