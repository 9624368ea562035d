"""fedloom: federated learning for PyTorch."""

from typing import TYPE_CHECKING

from fedloom.core.lazy import lazy_exports

if TYPE_CHECKING:
    from fedloom.api import federate as federate
    from fedloom.config import FedConfig as FedConfig
    from fedloom.config import load_config as load_config
    from fedloom.core.errors import ConfigError as ConfigError
    from fedloom.core.errors import DataError as DataError
    from fedloom.core.errors import FedloomError as FedloomError
    from fedloom.core.message import Message as Message
    from fedloom.core.registry import import_plugins as import_plugins
    from fedloom.core.registry import lookup as lookup
    from fedloom.core.registry import register as register
    from fedloom.core.tensors import Tensors as Tensors
    from fedloom.experiment import Experiment as Experiment
    from fedloom.experiment import RunResult as RunResult
    from fedloom.experiment import resume as resume
    from fedloom.export.model import export_model as export_model

_EXPORTS = {
    "federate": "fedloom.api",
    "FedConfig": "fedloom.config",
    "load_config": "fedloom.config",
    "ConfigError": "fedloom.core.errors",
    "DataError": "fedloom.core.errors",
    "FedloomError": "fedloom.core.errors",
    "Message": "fedloom.core.message",
    "import_plugins": "fedloom.core.registry",
    "lookup": "fedloom.core.registry",
    "register": "fedloom.core.registry",
    "Tensors": "fedloom.core.tensors",
    "Experiment": "fedloom.experiment",
    "RunResult": "fedloom.experiment",
    "resume": "fedloom.experiment",
    "export_model": "fedloom.export.model",
}

__version__ = "0.1.0"

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
