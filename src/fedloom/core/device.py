"""Where tensors compute: ``compute.device`` resolved against what this machine has."""

from __future__ import annotations

import torch

from fedloom.core.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N``, ``mps``, or ``auto`` (CUDA, else MPS, else CPU); a
    device this machine lacks is a ``ConfigError``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = device.index or 0
        if index >= count:
            raise ConfigError([f"compute.device={name}: this machine has {count} CUDA device(s)"])
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError([f"compute.device={name}: MPS is not available on this machine"])
    return device


def device_of(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s parameters (CPU for a model without any)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
