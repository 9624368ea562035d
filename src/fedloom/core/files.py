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


def overwrite_synced(path: Path, data: bytes) -> None:
    """Write ``data`` over ``path`` in place (created if missing), truncated to its length,
    and on disk before this returns. Not atomic: only for a file nothing refers to yet
    (a checkpoint's spare slot). Rewriting blocks a file already has costs a tenth of the
    fsync of a new file, whose blocks (and, on a mount with ``discard``, the old file's
    freed ones) the journal must commit first."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)


def write_linked(path: Path, data: bytes) -> None:
    """``write_atomic`` for a file rewritten often (a checkpoint's commit point), without
    a new file per write: two spare copies beside it (``.NAME.0``, ``.NAME.1``) take turns;
    the one ``path`` does not name is rewritten in place (``overwrite_synced``), then
    ``path`` is renamed to a new hard link of it. The rename is the commit: a kill at any
    instant leaves the old file or the new one. Where hard links are not supported, it is
    ``write_atomic``."""
    spares = [path.with_name(f".{path.name}.{k}") for k in (0, 1)]
    current = _inode(path)
    spare = spares[1] if current is not None and current == _inode(spares[0]) else spares[0]
    overwrite_synced(spare, data)
    link = path.with_name(f".{path.name}.link")
    try:
        link.unlink(missing_ok=True)
        os.link(spare, link)
    except OSError:
        write_atomic(path, data)
        return
    os.replace(link, path)


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def save_tensors_atomic(path: Path, tensors: Mapping[str, Tensor]) -> None:
    """``write_atomic`` for a safetensors file."""
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({name: t.contiguous() for name, t in tensors.items()}, tmp)
    _replace_synced(tmp, path)
