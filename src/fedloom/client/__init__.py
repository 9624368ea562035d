"""Client side: local training and the fit of one round."""

from typing import TYPE_CHECKING

from fedloom.core.lazy import lazy_exports

if TYPE_CHECKING:
    from fedloom.client.client import Client as Client
    from fedloom.client.config import TrainConfig as TrainConfig
    from fedloom.client.context import FitContext as FitContext
    from fedloom.client.context import TrainResult as TrainResult
    from fedloom.client.context import UpdateHook as UpdateHook
    from fedloom.client.trainer import LocalTrainer as LocalTrainer

_EXPORTS = {
    "Client": "fedloom.client.client",
    "TrainConfig": "fedloom.client.config",
    "FitContext": "fedloom.client.context",
    "TrainResult": "fedloom.client.context",
    "UpdateHook": "fedloom.client.context",
    "LocalTrainer": "fedloom.client.trainer",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
