"""Build a ``FederatedDataset``: load a named dataset (or take the user's tensors) and split it."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import torch
from torch.utils.data import ConcatDataset, Dataset, Subset, TensorDataset

from fedloom.core.errors import ConfigError, DataError
from fedloom.data.base import FederatedDataset, Split, TensorData
from fedloom.data.config import CUSTOM_DATA, DataConfig
from fedloom.data.partition import partition, scheme_options
from fedloom.data.registry import LoadedData, get_loader
from fedloom.data.views import LazyData


def load_federated(cfg: DataConfig, num_clients: int, seed: int) -> FederatedDataset:
    """Load ``cfg.name`` and split its train set among ``num_clients`` clients.

    The scheme is ``cfg.resolved_partition``; the test split stays centralised. The same
    (cfg, num_clients, seed) always gives the same data and split.
    """
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        raise DataError(f"num_clients must be a positive int, got {num_clients!r}")
    if cfg.name == CUSTOM_DATA:
        raise ConfigError(
            [
                "data.name=custom: the data were supplied through the Python API and "
                "fedloom has no copy; pass them again (fedloom.resume(run_dir, model=..., "
                "data=...)) or choose a dataset"
            ]
        )
    built = get_loader(cfg.name)(cfg, num_clients, seed)
    if isinstance(built, FederatedDataset):  # already one client per device, built on demand
        return _as_given(built, cfg)
    loaded = keep_classes(built, cfg.classes)
    scheme = cfg.resolved_partition
    if scheme == "natural":
        if loaded.natural_split is None:
            raise DataError(f"{cfg.name} has no natural split; choose another data.partition")
        indices = loaded.natural_split
    else:
        indices = partition(
            loaded.train.y, num_clients, scheme, seed, **config_options(cfg, scheme)
        )
    return FederatedDataset(
        train=loaded.train,
        test=loaded.test,
        client_indices=indices,
        num_classes=loaded.num_classes,
        input_shape=tuple(loaded.train.x.shape[1:]),
    )


def _as_given(data: FederatedDataset, cfg: DataConfig) -> FederatedDataset:
    """A loader's own federated dataset (e.g. ``synthetic_lazy``: one client per device,
    each built when it trains), which no partition or class filter can reshape."""
    if cfg.resolved_partition != "natural":
        raise DataError(
            f"data.partition={cfg.partition}: {cfg.name} comes split into one client per "
            'device; use "natural" (or leave it unset)'
        )
    if cfg.classes is not None:
        raise DataError(f"data.classes cannot be combined with {cfg.name}'s per-device split")
    return data


def keep_classes(loaded: LoadedData, classes: list[int] | None) -> LoadedData:
    """``loaded`` restricted to the labels in ``classes`` (all of them when None)."""
    if classes is None:
        return loaded
    unknown = sorted(set(classes) - set(range(loaded.num_classes)))
    if unknown:
        raise DataError(
            f"data.classes {unknown} are not labels of a {loaded.num_classes}-class dataset"
        )
    if loaded.natural_split is not None:
        raise DataError("data.classes cannot be combined with a dataset's natural split")
    wanted = torch.tensor(sorted(set(classes)))
    train, test = (
        split.subset(torch.isin(split.y, wanted).nonzero().flatten())
        for split in (loaded.train, loaded.test)
    )
    return dataclasses.replace(loaded, train=train, test=test)


def federate_tensors(
    train: Split, test: Split, num_clients: int, cfg: DataConfig, seed: int
) -> FederatedDataset:
    """Split the user's own ``train`` (tensors, or a lazily read dataset) among clients,
    keeping ``test`` centralised.

    ``num_classes`` is the largest known label in train or test plus one; ``input_shape``
    comes from the in-memory inputs (``()`` when both splits are read lazily).
    ``cfg.partition`` picks the scheme (unset means iid); ``cfg.name``, ``dir`` and
    ``files`` are ignored.
    """
    scheme = cfg.partition or "iid"
    if scheme == "natural":
        raise DataError(
            'your own tensors have no natural split; set data.partition to "iid", '
            '"dirichlet", "shards" or "quantity"'
        )
    input_shape = _input_shape([train, test])
    indices = partition(
        _partition_labels(train, scheme), num_clients, scheme, seed, **config_options(cfg, scheme)
    )
    return FederatedDataset(
        train=train,
        test=test,
        client_indices=indices,
        num_classes=_infer_num_classes(train, test),
        input_shape=input_shape,
    )


def natural_split(sites: list[Split], test: Split) -> FederatedDataset:
    """One client per site: the sites' data side by side, each client owning its own
    (a lazily read site stays unread: the sites are concatenated as views)."""
    if not sites:
        raise DataError("client_data is empty: give at least one client's dataset")
    train = _side_by_side(sites)
    bounds = [0, *itertools.accumulate(len(site) for site in sites)]
    indices = [torch.arange(a, b, dtype=torch.int64) for a, b in itertools.pairwise(bounds)]
    return FederatedDataset(
        train=train,
        test=test,
        client_indices=indices,
        num_classes=_infer_num_classes(train, test),
        input_shape=_input_shape([*sites, test]),
    )


def _side_by_side(sites: list[Split]) -> Split:
    if all(isinstance(s, TensorData) for s in sites):
        return TensorData(torch.cat([s.x for s in sites]), torch.cat([s.y for s in sites]))
    parts: list[Dataset[Any]] = []
    for site in sites:
        if isinstance(site, TensorData):
            parts.append(TensorDataset(site.x, site.y))
        else:
            parts.append(Subset(site.dataset, site.indices.tolist()))
    targets = [s.y if s.targets_known else None for s in sites]
    known = [t for t in targets if t is not None]
    settings = next(s.settings for s in sites if isinstance(s, LazyData))
    together: ConcatDataset[Any] = ConcatDataset(parts)
    return LazyData(
        together,
        torch.arange(len(together)),
        torch.cat(known) if len(known) == len(sites) else None,
        settings,
    )


def _input_shape(splits: list[Split]) -> tuple[int, ...]:
    """The one shape of the in-memory inputs (``()`` if all are read lazily)."""
    shapes = sorted({tuple(s.x.shape[1:]) for s in splits if isinstance(s, TensorData)})
    if len(shapes) > 1:
        raise DataError(f"the clients' and the test inputs differ in shape: {shapes}")
    return shapes[0] if shapes else ()


def config_options(cfg: DataConfig, scheme: str) -> dict[str, Any]:
    """The config values for the options ``scheme`` takes (matched by name)."""
    return {
        name: getattr(cfg, name)
        for name in scheme_options(scheme)
        if name in DataConfig.model_fields
    }


def _partition_labels(train: Split, scheme: str) -> torch.Tensor:
    """The labels a scheme splits by; targets that are not class labels (regression,
    next tokens), or unknown ones (a lazy dataset without ``.targets``), only fit the
    schemes that do not read labels."""
    if train.has_labels:
        return train.y
    if scheme in LABEL_FREE_SCHEMES:
        return torch.zeros(len(train), dtype=torch.int64)
    if not train.targets_known:
        raise DataError(
            f"data.partition={scheme} splits by class label, but the labels of a lazily "
            f"read dataset are unknown; give it a .targets attribute or use "
            f"{' or '.join(sorted(LABEL_FREE_SCHEMES))}"
        )
    raise DataError(
        f"data.partition={scheme} splits by class label, but the targets are not class "
        f"labels (dtype {train.y.dtype}, shape {tuple(train.y.shape)}); use "
        f"{' or '.join(sorted(LABEL_FREE_SCHEMES))}"
    )


LABEL_FREE_SCHEMES = frozenset({"iid", "quantity"})


def _infer_num_classes(train: Split, test: Split) -> int:
    """Classes (labels, or a language model's vocabulary): the largest id plus one. For
    real-valued targets: the number of outputs per sample. Unknown targets (lazily read
    data without ``.targets``) count as 1: the model's outputs are not checked."""
    if not (train.targets_known or test.targets_known):
        if not (len(train) or len(test)):
            raise DataError("both train and test are empty")
        return 1
    if train.targets_known and train.y.dtype.is_floating_point:
        return int(train.y[0].numel()) if len(train) else 1
    labels = [s.y for s in (train, test) if s.targets_known and len(s)]
    if not labels:
        raise DataError("both train and test are empty")
    lowest = min(int(y.min()) for y in labels)
    if lowest < 0:
        raise DataError(f"labels must be class indices >= 0, found {lowest}")
    return max(int(y.max()) for y in labels) + 1
