"""Client-side state at rest, kept apart from the server's checkpoint.

A client's persistent state (error-feedback residuals, SCAFFOLD's control variate) is
derived from its local data and is never noised: it belongs on the client's device, not
in what the server keeps. Over the network each client process holds its own in memory
(``Client.state``) and the server never sees it. In simulation the run directory stands
in for every device's disk: ``<run_dir>/clients/<id>/<round>.safetensors``, one file per
client and checkpointed round, and ``checkpoint/`` holds no client tensor.

Commit order: the files of round r are written (each atomically) before the server's
checkpoint of round r commits, and the older rounds' files are removed only after, so a
kill at any instant leaves the files of whatever round the checkpoint names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from safetensors.torch import load_file

from fedloom.core.errors import FedloomError
from fedloom.core.files import save_tensors_atomic
from fedloom.core.tensors import Tensors

CLIENTS_DIR = "clients"
"""The client store's folder inside a run directory."""
_SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def _file(directory: Path, client_id: str, rnd: int) -> Path:
    if not _SAFE_ID.fullmatch(client_id):
        raise ValueError(f"client id {client_id!r} cannot name a file in the client store")
    return directory / client_id / f"{rnd:06d}.safetensors"


def save_client_states(directory: Path, rnd: int, states: Mapping[str, Tensors]) -> None:
    """Write each client's state as of round ``rnd`` (atomically, one file per client)."""
    for cid, state in states.items():
        path = _file(directory, cid, rnd)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_tensors_atomic(path, state)


def prune_client_states(directory: Path, rnd: int) -> None:
    """Remove every round's files but ``rnd``'s (call once round ``rnd`` is committed)."""
    if not directory.is_dir():
        return
    for path in directory.glob("*/*.safetensors"):
        if path.name != f"{rnd:06d}.safetensors":
            path.unlink()


def load_client_states(directory: Path, rnd: int) -> dict[str, Tensors]:
    """Every client's state as of round ``rnd`` (clients without a file had none)."""
    if not directory.is_dir():
        return {}
    states = {}
    for folder in sorted(p for p in directory.iterdir() if p.is_dir()):
        path = _file(directory, folder.name, rnd)
        if path.is_file():
            try:
                states[folder.name] = load_file(path)
            except Exception as error:  # safetensors raises its own error types
                raise FedloomError(f"corrupt client state {path}: {error}") from None
    return states
