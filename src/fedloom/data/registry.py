"""Dataset loaders by name (kind ``dataset`` of ``fedloom.core.registry``) and the contract
they fulfil."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fedloom.core.errors import DataError
from fedloom.core.registry import REGISTRY
from fedloom.data.base import TensorData
from fedloom.data.config import DataConfig


@dataclass(frozen=True)
class LoadedData:
    """What a loader returns: the splits, and the per-device split if the data has one."""

    train: TensorData
    test: TensorData
    num_classes: int
    natural_split: list[torch.Tensor] | None = None


#: A loader reads ``(cfg, num_clients, seed)``; only loaders with a natural split use
#: ``num_clients`` (one device per client).
DatasetLoader = Callable[[DataConfig, int, int], LoadedData]


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Register a loader under ``name``: ``@fedloom.register("dataset", name)``."""
    return REGISTRY.register("dataset", name)


def get_loader(name: str) -> DatasetLoader:
    return REGISTRY.component("dataset", name, "data.name").load()  # type: ignore[no-any-return]


def require_data_dir(cfg: DataConfig) -> Path:
    """``cfg.dir`` as an existing folder, or a DataError saying how to set it."""
    if cfg.dir is None:
        raise DataError(
            f"data.dir is not set: {cfg.name} is read from local files, so set data.dir "
            "to the folder that holds them (fedloom never downloads at run time)"
        )
    directory = Path(cfg.dir).expanduser()
    if not directory.is_dir():
        raise DataError(f"data.dir {str(directory)!r} for {cfg.name} is not an existing folder")
    return directory
