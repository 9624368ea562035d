"""Files: small JSON inputs a run is given (tokens, sizes), read with errors naming the
key; and atomic writes for what a run keeps (checkpoints, client state, its config)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor

from fedloom.core.errors import ConfigError


def read_json(path: str | Path, key: str) -> Any:
    """The JSON document in the file config key ``key`` names; a ConfigError naming the key
    when it cannot be read or parsed."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except OSError as error:
        raise ConfigError([f"{key}: cannot read {path}: {error}"]) from None
    except ValueError as error:
        raise ConfigError([f"{key}: {path} is not JSON: {error}"]) from None


def _replace_synced(tmp: Path, path: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` so that a kill at any instant leaves the old file or the new one:
    a temporary file beside it, on disk before it is renamed over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    _replace_synced(tmp, path)


def save_tensors_atomic(path: Path, tensors: Mapping[str, Tensor]) -> None:
    """``write_atomic`` for a safetensors file."""
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({name: t.contiguous() for name, t in tensors.items()}, tmp)
    _replace_synced(tmp, path)
