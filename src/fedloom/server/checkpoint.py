"""Atomic checkpoints: one safetensors file of every tensor, one JSON file of the rest.

The JSON file is the commit point. It is written to a temporary name, fsynced, and
renamed over the old one only after the tensors it names are on disk, so a kill at any
instant leaves either the previous checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from fedloom.core.errors import FedloomError
from fedloom.core.files import save_tensors_atomic, write_atomic
from fedloom.core.tensors import Tensors

STATE_JSON = "state.json"
_TENSOR_FILE = re.compile(r"tensors-\d{6,}\.safetensors")


@dataclass
class Checkpoint:
    round: int
    global_state: Tensors
    strategy_tensors: Tensors = field(default_factory=dict)
    strategy_rest: dict[str, Any] = field(default_factory=dict)
    client_states: dict[str, Tensors] = field(default_factory=dict)
    """Legacy: clients' own state. Runs keep it in the client store
    (``fedloom.client.store``), never here; older checkpoints that hold it still load."""
    extra: dict[str, Any] = field(default_factory=dict)
    """JSON-safe state of other components (accountant, elapsed time, ...)."""


def save_checkpoint(directory: Path, ckpt: Checkpoint) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"global/{n}": t for n, t in ckpt.global_state.items()}
    tensors |= {f"strategy/{n}": t for n, t in ckpt.strategy_tensors.items()}
    for cid, state in ckpt.client_states.items():
        tensors |= {f"client/{cid}/{n}": t for n, t in state.items()}
    tensor_file = f"tensors-{ckpt.round:06d}.safetensors"
    save_tensors_atomic(directory / tensor_file, tensors)
    doc = {
        "round": ckpt.round,
        "tensors": tensor_file,
        "strategy": ckpt.strategy_rest,
        "clients": sorted(ckpt.client_states),
        "extra": ckpt.extra,
    }
    write_atomic(directory / STATE_JSON, json.dumps(doc, indent=1, sort_keys=True).encode())
    for old in directory.glob("tensors-*.safetensors"):
        if old.name != tensor_file:
            old.unlink()


def has_checkpoint(directory: Path) -> bool:
    """``directory`` holds a complete checkpoint (its state file is written last)."""
    return (directory / STATE_JSON).is_file()


def load_checkpoint(directory: Path) -> Checkpoint:
    """The checkpoint in ``directory``; a file that is not one this module wrote (edited,
    truncated, pointing elsewhere) is a ``FedloomError`` naming it, never a traceback."""
    state_path = directory / STATE_JSON
    if not state_path.exists():
        raise FedloomError(f"no checkpoint in {directory} (missing {STATE_JSON})")
    try:
        doc = json.loads(state_path.read_text())
        name, rnd, clients = doc["tensors"], doc["round"], doc["clients"]
        strategy, extra = doc["strategy"], doc["extra"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise FedloomError(f"corrupt checkpoint {state_path}: {error!r}") from None
    if (
        not isinstance(name, str)
        or not _TENSOR_FILE.fullmatch(name)
        or not isinstance(rnd, int)
        or rnd < 0
        or not isinstance(clients, list)
        or not all(isinstance(c, str) for c in clients)
        or not isinstance(strategy, dict)
        or not isinstance(extra, dict)
    ):
        raise FedloomError(f"corrupt checkpoint {state_path}: unexpected fields")
    try:
        tensors = load_file(directory / name)
    except Exception as error:  # safetensors raises its own error types
        raise FedloomError(f"corrupt checkpoint tensors {directory / name}: {error}") from None

    def part(prefix: str) -> Tensors:
        return {k[len(prefix) :]: t for k, t in tensors.items() if k.startswith(prefix)}

    return Checkpoint(
        round=rnd,
        global_state=part("global/"),
        strategy_tensors=part("strategy/"),
        strategy_rest=strategy,
        client_states={cid: part(f"client/{cid}/") for cid in clients},
        extra=extra,
    )
