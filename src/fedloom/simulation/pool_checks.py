"""Config-time checks of the client pool (``clients.lazy``) against the other sections.

Torch-free (``fedloom.compat`` runs it while the config is validated). The pool builds a
client only when a round samples it, so what needs every client object at once cannot
meet it: the vectorized transport groups the round's ``Client`` objects it was handed up
front, and the torch.distributed engine asks every client whether it holds state.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from fedloom.core.registry import REGISTRY

if TYPE_CHECKING:
    from fedloom.config import FedConfig

EAGER_LIMIT = 1000
"""``clients.lazy=auto``: the most clients built up front (``fedloom.simulation.pool``)."""
ON_DEMAND = "on_demand"
"""A dataset capability: it builds each client's data when asked (``synthetic_lazy``)."""


def on_demand_dataset(name: str) -> bool:
    known = name in REGISTRY.names("dataset")
    return known and ON_DEMAND in REGISTRY.component("dataset", name).capabilities


def pooled(cfg: FedConfig) -> bool:
    """Whether this config's simulated clients are built only when sampled."""
    lazy = cfg.clients.lazy
    if lazy == "auto":
        return on_demand_dataset(cfg.data.name) or cfg.clients.num > EAGER_LIMIT
    return lazy == "on"


def _why(cfg: FedConfig) -> str:
    if cfg.clients.lazy == "on":
        return "clients.lazy=on"
    if on_demand_dataset(cfg.data.name):
        return f"clients.lazy=auto with data.name={cfg.data.name}"
    return f"clients.lazy=auto with clients.num={cfg.clients.num} (> {EAGER_LIMIT})"


def pooled_clients(cfg: FedConfig) -> list[str]:
    if cfg.network.mode != "simulation" or not pooled(cfg):
        return []
    problems = []
    key = _why(cfg)
    if cfg.simulation.vectorize == "on":
        problems.append(
            f"simulation.vectorize=on groups client objects built up front, but {key} builds "
            "each client only when sampled: use simulation.vectorize=auto or off, or "
            "clients.lazy=off"
        )
    world = os.environ.get("WORLD_SIZE")
    ranks = int(world) if world and world.isdigit() else cfg.simulation.workers
    if ranks > 1:
        problems.append(
            f"simulation.workers={ranks} (or torchrun) checks every client object each round, "
            f"but {key} builds each client only when sampled: run one process, or "
            "clients.lazy=off"
        )
    return problems
