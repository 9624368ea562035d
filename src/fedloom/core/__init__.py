"""Tiny shared vocabulary imported by every layer: tensors dicts, messages, errors, seeding."""

from fedloom.core.errors import ConfigError, DataError, FedloomError, UpdateRejected
from fedloom.core.message import Message
from fedloom.core.seeding import derive_seed, generator
from fedloom.core.tensors import Tensors

__all__ = [
    "ConfigError",
    "DataError",
    "FedloomError",
    "Message",
    "Tensors",
    "UpdateRejected",
    "derive_seed",
    "generator",
]
