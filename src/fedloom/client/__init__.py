"""Client side: local training and the fit of one round."""

from fedloom.client.client import Client
from fedloom.client.context import FitContext, TrainResult, UpdateHook
from fedloom.client.trainer import LocalTrainer, TrainConfig

__all__ = ["Client", "FitContext", "LocalTrainer", "TrainConfig", "TrainResult", "UpdateHook"]
