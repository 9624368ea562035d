"""Attacking clients, to measure what robust aggregation buys.

The attackers are a fixed set drawn from the run seed. An attack (kind ``attack`` of the
registry) declares capability ``update`` (``fn(update, ctx, config) -> Tensors``, an update
transform on attackers only) or ``data`` (``fn(data, num_classes) -> TensorData``, what an
attacker trains on, e.g. flipped labels).
Honest clients run exactly the code they would run without any attack configured.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fedloom.client.context import FitContext, UpdateHook
from fedloom.core.registry import REGISTRY
from fedloom.core.seeding import generator
from fedloom.core.tensors import Tensors
from fedloom.data.base import Split, TensorData
from fedloom.robust.config import AttackConfig


def choose_attackers(num_clients: int, fraction: float, seed: int) -> frozenset[str]:
    """``round(fraction·N)`` client ids, a function of the seed only."""
    count = round(fraction * num_clients)
    order = torch.randperm(num_clients, generator=generator(seed, "attackers"))
    return frozenset(str(k) for k in order[:count].tolist())


def sign_flip(update: Tensors, ctx: FitContext, config: AttackConfig) -> Tensors:
    return {n: -t for n, t in update.items()}


def scale(update: Tensors, ctx: FitContext, config: AttackConfig) -> Tensors:
    return {n: t * config.scale for n, t in update.items()}


def gaussian(update: Tensors, ctx: FitContext, config: AttackConfig) -> Tensors:
    gen = generator(ctx.seed, "attack-noise", ctx.round, ctx.client_id)
    return {
        n: (torch.randn(t.shape, generator=gen, dtype=torch.float64) * config.noise_std).to(t.dtype)
        for n, t in update.items()
    }


UpdateAttack = Callable[[Tensors, FitContext, AttackConfig], Tensors]
DataAttack = Callable[[Split, int], Split]


def attack_hook(config: AttackConfig, attackers: frozenset[str]) -> UpdateHook:
    """An attack of capability ``update``: ``forge(update, ctx, config)`` on attackers."""
    forge: UpdateAttack = REGISTRY.lookup("attack", config.kind)

    def hook(update: Tensors, ctx: FitContext) -> Tensors:
        return forge(update, ctx, config) if ctx.client_id in attackers else update

    return hook


def flip_labels(data: Split, num_classes: int) -> Split:
    """Every label ``y`` becomes ``C − 1 − y``: a consistent, maximally wrong relabelling."""
    return TensorData(data.x, num_classes - 1 - data.y)


def poisoned_data(
    poison: DataAttack,
    client_data: Callable[[int], Split],
    num_classes: int,
    attackers: frozenset[str],
) -> Callable[[int], Split]:
    """An attack of capability ``data``: attackers train on ``poison(data, num_classes)``."""

    def data(k: int) -> Split:
        honest = client_data(k)
        return poison(honest, num_classes) if str(k) in attackers else honest

    return data
