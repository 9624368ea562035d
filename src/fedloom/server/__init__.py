"""Server side: the round loop, sampling, strategies, validation and checkpoints."""

from fedloom.server.aggregate import WeightedSum, weighted_mean
from fedloom.server.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fedloom.server.sampler import UniformSampler
from fedloom.server.server import Server
from fedloom.server.strategy import Strategy, StrategyConfig, build_strategy

__all__ = [
    "Checkpoint",
    "Server",
    "Strategy",
    "StrategyConfig",
    "UniformSampler",
    "WeightedSum",
    "build_strategy",
    "load_checkpoint",
    "save_checkpoint",
    "weighted_mean",
]
