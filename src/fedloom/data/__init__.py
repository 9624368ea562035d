"""Datasets and their division among clients.

``load_federated(cfg, num_clients, seed)`` gives a ``FederatedDataset`` for a named
dataset; ``federate_tensors`` does the same for the user's own tensors, and
``partition`` exposes the split schemes on their own.
"""

from fedloom.data.base import FederatedDataset, TensorData, from_torch_dataset
from fedloom.data.config import DataConfig
from fedloom.data.federated import federate_tensors, load_federated
from fedloom.data.partition import PARTITIONERS, partition, register_partition
from fedloom.data.registry import DATASETS, LoadedData, register_dataset

__all__ = [
    "DATASETS",
    "PARTITIONERS",
    "DataConfig",
    "FederatedDataset",
    "LoadedData",
    "TensorData",
    "federate_tensors",
    "from_torch_dataset",
    "load_federated",
    "partition",
    "register_dataset",
    "register_partition",
]
