"""fedloom: federated learning for PyTorch."""

from fedloom.api import federate
from fedloom.config import FedConfig, load_config
from fedloom.core import ConfigError, DataError, FedloomError, Message, Tensors
from fedloom.experiment import Experiment, RunResult, resume

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "Experiment",
    "FedConfig",
    "FedloomError",
    "Message",
    "RunResult",
    "Tensors",
    "federate",
    "load_config",
    "resume",
]
