"""Loading pretrained weights: safetensors, or a torch state_dict read with weights_only."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from fedloom.core.errors import ConfigError
from fedloom.core.tensors import Tensors


def read_weights(path: str | Path) -> Tensors:
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"model.checkpoint: file {path} does not exist"])
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except (SafetensorError, OSError) as error:
            raise ConfigError(
                [f"model.checkpoint: {path} is not a safetensors file ({error})"]
            ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" not in str(error):  # not a pickled object: not readable
            raise ConfigError(
                [f"model.checkpoint: {path} cannot be read as a state_dict"]
            ) from None
        raise ConfigError(
            [
                f"model.checkpoint: {path} holds a pickled object (torch.save(model)?), not a "
                "state_dict; save torch.save(model.state_dict(), path) or safetensors instead"
            ]
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError([f"model.checkpoint: {path} cannot be read: {first}"]) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError([f"model.checkpoint: {path} does not hold a state_dict of tensors"])
    return dict(state)


def load_pretrained(model: nn.Module, path: str | Path) -> None:
    """Load weights into ``model``; every name or shape mismatch is listed in one error."""
    weights = read_weights(path)
    expected = model.state_dict()
    problems = [f"missing from checkpoint: {n}" for n in expected if n not in weights]
    problems += [f"not in the model: {n}" for n in weights if n not in expected]
    problems += [
        f"{n}: checkpoint shape {tuple(weights[n].shape)} != model shape {tuple(t.shape)}"
        for n, t in expected.items()
        if n in weights and weights[n].shape != t.shape
    ]
    if problems:
        raise ConfigError([f"model.checkpoint {path}: {p}" for p in problems])
    model.load_state_dict(weights)
