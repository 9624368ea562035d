"""Datasets and their division among clients.

``load_federated(cfg, num_clients, seed)`` gives a ``FederatedDataset`` for a named
dataset; ``federate_tensors`` does the same for the user's own tensors, and
``partition`` exposes the split schemes on their own.
"""

from typing import TYPE_CHECKING

from fedloom.core.lazy import lazy_exports

if TYPE_CHECKING:
    from fedloom.data.base import FederatedDataset as FederatedDataset
    from fedloom.data.base import TensorData as TensorData
    from fedloom.data.base import from_torch_dataset as from_torch_dataset
    from fedloom.data.config import DataConfig as DataConfig
    from fedloom.data.federated import federate_tensors as federate_tensors
    from fedloom.data.federated import load_federated as load_federated
    from fedloom.data.partition import partition as partition
    from fedloom.data.partition import register_partition as register_partition
    from fedloom.data.registry import LoadedData as LoadedData
    from fedloom.data.registry import register_dataset as register_dataset

_EXPORTS = {
    "FederatedDataset": "fedloom.data.base",
    "TensorData": "fedloom.data.base",
    "from_torch_dataset": "fedloom.data.base",
    "DataConfig": "fedloom.data.config",
    "federate_tensors": "fedloom.data.federated",
    "load_federated": "fedloom.data.federated",
    "partition": "fedloom.data.partition",
    "register_partition": "fedloom.data.partition",
    "LoadedData": "fedloom.data.registry",
    "register_dataset": "fedloom.data.registry",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
