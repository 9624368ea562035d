"""Tiny shared vocabulary imported by every layer: tensors dicts, messages, errors, seeding,
the component registry. Names load on first use, so a torch-free module stays torch-free."""

from typing import TYPE_CHECKING

from fedloom.core.lazy import lazy_exports

if TYPE_CHECKING:
    from fedloom.core.errors import ConfigError as ConfigError
    from fedloom.core.errors import DataError as DataError
    from fedloom.core.errors import FedloomError as FedloomError
    from fedloom.core.errors import UpdateRejected as UpdateRejected
    from fedloom.core.message import Message as Message
    from fedloom.core.seeding import derive_seed as derive_seed
    from fedloom.core.seeding import generator as generator
    from fedloom.core.tensors import Tensors as Tensors

_EXPORTS = {
    "ConfigError": "fedloom.core.errors",
    "DataError": "fedloom.core.errors",
    "FedloomError": "fedloom.core.errors",
    "UpdateRejected": "fedloom.core.errors",
    "Message": "fedloom.core.message",
    "derive_seed": "fedloom.core.seeding",
    "generator": "fedloom.core.seeding",
    "Tensors": "fedloom.core.tensors",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
