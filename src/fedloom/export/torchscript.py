"""TorchScript: a traced ``.pt`` archive for libtorch (C++, PyTorch Mobile's lite
interpreter), with the preprocessing stored inside it as an extra file, so the one file
is self-contained."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedloom.core.errors import FedloomError

METADATA_FILE = "fedloom.json"
"""The archive's extra file holding the same properties as ONNX's ``metadata_props``."""


def write_torchscript(
    model: nn.Module, example: torch.Tensor, target: Path, props: dict[str, str]
) -> str:
    """Trace ``model`` on ``example`` and save it with ``props``; returns the exporter."""
    with torch.no_grad():
        traced = torch.jit.trace(model.eval(), example, check_trace=False)
    torch.jit.save(traced, str(target), _extra_files={METADATA_FILE: json.dumps(props)})
    return "torch.jit.trace"


def read_props(path: Path) -> dict[str, str]:
    extra = {METADATA_FILE: ""}
    try:
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except (RuntimeError, ValueError) as error:
        raise FedloomError(f"{path} is not a TorchScript archive ({error})") from None
    props = json.loads(extra[METADATA_FILE] or "{}")
    return {str(k): str(v) for k, v in props.items()}


def torchscript_runner(path: Path, batch: int = 256) -> Callable[[np.ndarray], np.ndarray]:
    """Runs the archive in TorchScript's interpreter (not the Python model)."""
    try:
        module = torch.jit.load(str(path), map_location="cpu").eval()
    except (RuntimeError, ValueError) as error:
        raise FedloomError(f"{path} is not a TorchScript archive ({error})") from None

    def run(x: np.ndarray) -> np.ndarray:
        outputs = []
        with torch.no_grad():
            for start in range(0, len(x), batch):
                out = module(torch.from_numpy(x[start : start + batch]))
                if isinstance(out, dict):
                    out = out["logits"]
                outputs.append(out.float().numpy())
        return np.concatenate(outputs) if outputs else np.zeros((0, 0), dtype=np.float32)

    return run
