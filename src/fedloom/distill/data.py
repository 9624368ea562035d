"""The unlabeled distillation data (FedDF) or public set (FedMD): a held-out slice of the
training data, or a registered dataset's split (``distill.data``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fedloom.core.errors import ConfigError
from fedloom.core.seeding import generator
from fedloom.data.base import FederatedDataset
from fedloom.data.config import DataConfig
from fedloom.data.registry import get_loader
from fedloom.distill.config import DistillConfig


@dataclass(frozen=True)
class Unlabeled:
    """Distillation inputs: ``fit`` to distil on, ``val`` to measure agreement on."""

    fit: Tensor
    val: Tensor

    @property
    def inputs(self) -> Tensor:
        """Every example, ``fit`` then ``val`` (the order class scores are sent in)."""
        return torch.cat([self.fit, self.val])


def hold_out(data: FederatedDataset, fraction: float, seed: int) -> tuple[FederatedDataset, Tensor]:
    """``data`` without a seeded ``fraction`` of each client's training examples, and the
    inputs of those examples. Each client keeps at least one example of its own."""
    gen = generator(seed, "distill", "holdout")
    held_parts = []
    for idx in data.client_indices:
        take = min(int(fraction * len(idx)), max(len(idx) - 1, 0))
        held_parts.append(idx[torch.randperm(len(idx), generator=gen)[:take]])
    held = torch.sort(torch.cat(held_parts)).values
    keep = torch.ones(len(data.train), dtype=torch.bool)
    keep[held] = False
    position = torch.cumsum(keep, 0) - 1  # index of each kept example in the new split
    reduced = FederatedDataset(
        train=data.train.subset(keep.nonzero().flatten()),
        test=data.test,
        client_indices=[position[idx[keep[idx]]] for idx in data.client_indices],
        num_classes=data.num_classes,
        input_shape=data.input_shape,
    )
    return reduced, data.train.x[held]


def load_inputs(name: str, data_cfg: DataConfig, seed: int, shape: tuple[int, ...]) -> Tensor:
    """The inputs of ``distill.data=NAME[:SPLIT]`` (the train split by default), which must
    have the federation's input shape."""
    dataset, _, split = name.partition(":")
    loaded = get_loader(dataset)(data_cfg.model_copy(update={"name": dataset}), 1, seed)
    x = (loaded.test if split == "test" else loaded.train).x
    if tuple(x.shape[1:]) != tuple(shape):
        raise ConfigError(
            [
                f"distill.data={name} has inputs of shape {tuple(x.shape[1:])}, but "
                f"data.name={data_cfg.name} has {tuple(shape)}"
            ]
        )
    return x


def split_unlabeled(x: Tensor, cfg: DistillConfig, seed: int) -> Unlabeled:
    """``x`` (at most ``cfg.max_examples`` of it) shuffled and cut into fit and val parts."""
    order = torch.randperm(len(x), generator=generator(seed, "distill", "split"))
    if cfg.max_examples is not None:
        order = order[: cfg.max_examples]
    if len(order) < 2:
        raise ConfigError(
            [
                f"distill: {len(order)} distillation example(s); at least 2 are needed "
                "(raise distill.holdout or give distill.data)"
            ]
        )
    n_val = min(max(1, round(cfg.val_fraction * len(order))), len(order) - 1)
    return Unlabeled(fit=x[order[n_val:]], val=x[order[:n_val]])


def distillation_data(
    data: FederatedDataset, data_cfg: DataConfig, cfg: DistillConfig, seed: int
) -> tuple[FederatedDataset, Unlabeled]:
    """The clients' data (smaller by the held-out slice when ``distill.data`` is None) and
    the unlabeled distillation data."""
    if cfg.data is None:
        data, x = hold_out(data, cfg.holdout, seed)
    else:
        x = load_inputs(cfg.data, data_cfg, seed, data.input_shape)
    return data, split_unlabeled(x, cfg, seed)
