"""Server side: the round loop, sampling, strategies, validation and checkpoints."""

from typing import TYPE_CHECKING

from fedloom.core.lazy import lazy_exports

if TYPE_CHECKING:
    from fedloom.server.aggregate import WeightedSum as WeightedSum
    from fedloom.server.aggregate import weighted_mean as weighted_mean
    from fedloom.server.checkpoint import Checkpoint as Checkpoint
    from fedloom.server.checkpoint import load_checkpoint as load_checkpoint
    from fedloom.server.checkpoint import save_checkpoint as save_checkpoint
    from fedloom.server.sampler import UniformSampler as UniformSampler
    from fedloom.server.server import Server as Server
    from fedloom.server.strategy import Strategy as Strategy
    from fedloom.server.strategy import StrategyConfig as StrategyConfig
    from fedloom.server.strategy import build_strategy as build_strategy

_EXPORTS = {
    "WeightedSum": "fedloom.server.aggregate",
    "weighted_mean": "fedloom.server.aggregate",
    "Checkpoint": "fedloom.server.checkpoint",
    "load_checkpoint": "fedloom.server.checkpoint",
    "save_checkpoint": "fedloom.server.checkpoint",
    "UniformSampler": "fedloom.server.sampler",
    "Server": "fedloom.server.server",
    "Strategy": "fedloom.server.strategy",
    "StrategyConfig": "fedloom.server.strategy",
    "build_strategy": "fedloom.server.strategy",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
