"""Client-side state at rest, kept apart from the server's checkpoint.

A client's persistent state (error-feedback residuals, SCAFFOLD's control variate) is
derived from its local data and is never noised: it belongs on the client's device, not
in what the server keeps. Over the network each client process holds its own in memory
(``Client.state``) and the server never sees it. In simulation the run directory stands
in for every device's disk: ``<run_dir>/clients/`` is ONE store for all clients, so a
federation of 100,000 clients needs neither 100,000 Python objects nor 100,000 files:

- ``rows.bin``: a memory-mapped file with one fixed-size row per client (the tensors of
  ``layout.json`` end to end), created sparse: only the rows of clients that ever had
  state take disk space;
- ``has.bin``: one byte per client, 1 where its row holds state (the "has state" map);
- ``base.json``: the round whose state ``rows.bin`` and ``has.bin`` hold;
- ``journal-<round>.bin``: the rows that round changed, appended as clients finish
  (a record is the client's index, a has-state flag and its row), and
  ``journal-<round>.sealed`` once they are all on disk.

Commit order, so that a kill at any instant leaves the state of whatever round the
server's checkpoint names: round r's rows go to its journal (``put``), the journal is
synced and sealed (``seal``) before the checkpoint of round r commits, and only then are
its rows copied into ``rows.bin`` and ``base.json`` set to r (``commit``). ``recover(R)``
on resume replays a sealed journal R over a base of R − 1 (a kill between the
checkpoint and the end of ``commit``; replaying twice writes the same bytes) and drops a
journal past R (a kill before the checkpoint committed).
"""

from __future__ import annotations

import json
import mmap
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from fedloom.client.rows import Layout
from fedloom.core.errors import FedloomError
from fedloom.core.files import write_atomic
from fedloom.core.tensors import Tensors

CLIENTS_DIR = "clients"
"""The client store's folder inside a run directory."""
_HEADER = np.dtype([("client", "<i8"), ("has", "<i8")])
_JOURNAL = re.compile(r"journal-(\d{6})\.(bin|sealed)")


def _read_json(path: Path) -> object:
    """A small JSON file of the store, or a FedloomError naming it."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as error:
        raise FedloomError(f"corrupt client store file {path}: {error}") from None


class ClientStateStore:
    """Every simulated client's state in one memory-mapped file; see the module docstring.

    Memory: the mapped pages of this round's rows (each commit unmaps the pages it
    touched), the has-state map (one byte per client) and the round's journal index.
    """

    def __init__(self, directory: Path, num_clients: int) -> None:
        self.directory = Path(directory)
        self.num_clients = num_clients
        self.layout: Layout | None = None
        self._rows: np.memmap | None = None
        self._has: np.memmap | None = None
        self._round: int | None = None
        """The round whose journal is open."""
        self._journal: dict[int, int] = {}
        """Client index -> its record's position in the open journal."""
        self._loaded = False

    def _load(self) -> None:
        """Open the files on first use (a fresh run may clear its directory first)."""
        if self._loaded:
            return
        self._loaded = True
        layout = self.directory / "layout.json"
        if layout.is_file():
            try:
                found = Layout.from_json(layout.read_bytes())
            except (OSError, ValueError, KeyError, TypeError) as error:
                raise FedloomError(f"corrupt client store file {layout}: {error!r}") from None
            self._open(found)
        elif any((self.directory / name).exists() for name in ("rows.bin", "base.json")):
            raise FedloomError(f"corrupt client store {self.directory}: layout.json is missing")

    # -- files ---------------------------------------------------------------------------

    def _journal_path(self, rnd: int, kind: str = "bin") -> Path:
        return self.directory / f"journal-{rnd:06d}.{kind}"

    def _open(self, layout: Layout) -> None:
        if layout.num_clients != self.num_clients:
            raise FedloomError(
                f"the client store in {self.directory} holds {layout.num_clients} clients, "
                f"but this run has {self.num_clients}"
            )
        self.layout = layout
        self._rows = _mapped(self.directory / "rows.bin", (self.num_clients, layout.row_bytes))
        self._has = _mapped(self.directory / "has.bin", (self.num_clients,))

    def _create(self, state: Mapping[str, torch.Tensor]) -> Layout:
        layout = Layout.of(state, self.num_clients)
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomic(self.directory / "layout.json", layout.to_json())
        self._open(layout)
        return layout

    def base_round(self) -> int | None:
        """The round ``rows.bin`` holds, None before the first commit."""
        path = self.directory / "base.json"
        if not path.is_file():
            return None
        doc = _read_json(path)
        if not isinstance(doc, dict) or not isinstance(doc.get("round"), int):
            raise FedloomError(f"corrupt client store file {path}: no round")
        return int(doc["round"])

    def _index(self, cid: str) -> int:
        k = int(cid) if cid.isascii() and cid.isdigit() else -1
        if not 0 <= k < self.num_clients:
            raise ValueError(f"client id {cid!r} is not one of 0..{self.num_clients - 1}")
        return k

    # -- reading -------------------------------------------------------------------------

    def get(self, cid: str) -> Tensors:
        """Client ``cid``'s latest state (this round's if it already wrote one); ``{}``
        when it has none."""
        k = self._index(cid)
        self._load()
        if self.layout is None:
            return {}
        if k in self._journal:
            has, row = self._read_record(self._journal_path(self._round or 0), self._journal[k])
            return self.layout.decode(row) if has else {}
        assert self._rows is not None and self._has is not None
        return self.layout.decode(self._rows[k]) if self._has[k] else {}

    def clients(self) -> list[str]:
        """The clients that hold state now (committed, or written this round)."""
        self._load()
        if self._has is None:
            return []
        held = set(np.flatnonzero(self._has).tolist())
        for k, position in self._journal.items():
            has, _ = self._read_record(self._journal_path(self._round or 0), position)
            (held.add if has else held.discard)(k)
        return [str(k) for k in sorted(held)]

    def items(self) -> Iterator[tuple[str, Tensors]]:
        for cid in self.clients():
            yield cid, self.get(cid)

    def _record_size(self) -> int:
        assert self.layout is not None
        return _HEADER.itemsize + self.layout.row_bytes

    def _read_record(self, path: Path, position: int) -> tuple[bool, np.ndarray]:
        size = self._record_size()
        with open(path, "rb") as f:
            f.seek(position)
            data = f.read(size)
        if len(data) != size:
            raise FedloomError(f"the client store's journal {path} is truncated")
        header = np.frombuffer(data[: _HEADER.itemsize], dtype=_HEADER)[0]
        return bool(header["has"]), np.frombuffer(data[_HEADER.itemsize :], dtype=np.uint8)

    # -- writing: put, seal, commit ------------------------------------------------------

    def put(self, rnd: int, cid: str, state: Mapping[str, torch.Tensor]) -> None:
        """Record client ``cid``'s state after round ``rnd`` in that round's journal."""
        k = self._index(cid)
        self._load()
        if not state and self.layout is None:
            return  # nothing was ever kept: nothing to clear
        layout = self.layout or self._create(state)
        row = layout.encode(state) if state else np.zeros(layout.row_bytes, np.uint8)
        header = np.array([(k, 1 if state else 0)], dtype=_HEADER)
        path = self._start_round(rnd)
        with open(path, "ab") as f:
            position = f.tell()
            f.write(header.tobytes() + row.tobytes())
        self._journal[k] = position

    def _start_round(self, rnd: int) -> Path:
        path = self._journal_path(rnd)
        if self._round != rnd:
            self._round, self._journal = rnd, {}
            path.write_bytes(b"")  # a journal left by a killed attempt is started afresh
            self._journal_path(rnd, "sealed").unlink(missing_ok=True)
        return path

    def seal(self, rnd: int) -> None:
        """Put round ``rnd``'s journal on disk and mark it complete (before the server's
        checkpoint of round ``rnd`` commits)."""
        self._load()
        if self.layout is None:
            return  # no client has ever kept state
        path = self._start_round(rnd)
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        records = path.stat().st_size // self._record_size()
        write_atomic(self._journal_path(rnd, "sealed"), json.dumps(records).encode())

    def commit(self, rnd: int) -> None:
        """Copy round ``rnd``'s sealed journal into the rows (after the checkpoint of
        round ``rnd`` committed); the journal is then removed."""
        self._load()
        if self.layout is None:
            return
        self._replay(rnd)
        self._round, self._journal = None, {}

    def _replay(self, rnd: int) -> None:
        assert self._rows is not None and self._has is not None
        sealed = self._journal_path(rnd, "sealed")
        records = _read_json(sealed)
        if not isinstance(records, int) or records < 0:
            raise FedloomError(f"corrupt client store file {sealed}: not a record count")
        size = self._record_size()
        with open(self._journal_path(rnd), "rb") as f:
            for _ in range(records):
                data = f.read(size)
                if len(data) != size:
                    raise FedloomError(f"the client store's journal of round {rnd} is truncated")
                header = np.frombuffer(data[: _HEADER.itemsize], dtype=_HEADER)[0]
                k, has = int(header["client"]), int(header["has"])
                if not 0 <= k < self.num_clients:
                    raise FedloomError(f"the client store's journal of round {rnd} is corrupt")
                self._rows[k] = np.frombuffer(data[_HEADER.itemsize :], dtype=np.uint8)
                self._has[k] = has
        self._rows.flush()
        self._has.flush()
        _release(self._rows)
        _release(self._has)
        write_atomic(self.directory / "base.json", json.dumps({"round": rnd}).encode())
        self._drop_journals()

    def _drop_journals(self) -> None:
        for path in self.directory.glob("journal-*"):
            if _JOURNAL.fullmatch(path.name):
                path.unlink()

    def recover(self, rnd: int) -> None:
        """Bring the store to the state of round ``rnd``, the round the server's
        checkpoint names (see the module docstring)."""
        self._round, self._journal = None, {}
        self._load()
        if self.layout is None:
            if self.directory.is_dir():
                self._drop_journals()
            return
        base = self.base_round()
        sealed = self._journal_path(rnd, "sealed").is_file()
        if base is not None and base > rnd:
            raise FedloomError(
                f"the client store in {self.directory} holds round {base}, past the "
                f"checkpoint's round {rnd}: it belongs to a later checkpoint"
            )
        if base != rnd:
            if sealed and (base is None or base == rnd - 1):
                self._replay(rnd)  # killed after the checkpoint, before the commit ended
            elif base is not None or self._sealed_up_to(rnd):
                raise FedloomError(
                    f"the client store in {self.directory} holds round {base}, and round "
                    f"{rnd}'s journal is missing: it does not match the checkpoint"
                )
        self._drop_journals()  # what is left: stale, or never committed

    def adopt(self, rnd: int, states: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        """Take ``states`` (from an older layout) as round ``rnd``'s, committed at once:
        their source stays on disk until then, so a kill here only repeats this."""
        if not states:
            return
        for cid, state in states.items():
            self.put(rnd, cid, state)
        self.seal(rnd)
        self.commit(rnd)

    def _sealed_up_to(self, rnd: int) -> bool:
        return any(
            (m := _JOURNAL.fullmatch(p.name)) and m.group(2) == "sealed" and int(m.group(1)) <= rnd
            for p in self.directory.glob("journal-*.sealed")
        )

    def disk_bytes(self) -> int:
        """Bytes the store's files take on disk (a sparse file counts only its written
        blocks)."""
        if not self.directory.is_dir():
            return 0
        return sum(p.stat().st_blocks * 512 for p in self.directory.iterdir() if p.is_file())


def _mapped(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """``path`` mapped as uint8 of ``shape``; created sparse (all zeros) if missing."""
    size = int(np.prod(shape, dtype=np.int64))
    if not path.is_file():
        with open(path, "wb") as f:
            f.truncate(size)  # a hole: no block is written until a row is
    elif path.stat().st_size != size:
        raise FedloomError(f"the client store's {path.name} has the wrong size for its layout")
    return np.memmap(path, dtype=np.uint8, mode="r+", shape=shape)


def _release(array: np.memmap) -> None:
    """Unmap the pages of ``array`` this process touched (they are on disk now): the
    process's resident memory stays one round's rows, not every row it ever wrote."""
    mapped = getattr(array, "_mmap", None)
    if isinstance(mapped, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        mapped.madvise(mmap.MADV_DONTNEED)


def load_client_states(directory: Path, rnd: int) -> dict[str, Tensors]:
    """Every client's state as of round ``rnd`` (which the store must hold)."""
    layout_path = Path(directory) / "layout.json"
    if not layout_path.is_file():
        return load_legacy_states(Path(directory), rnd)
    num_clients = Layout.from_json(layout_path.read_bytes()).num_clients
    store = ClientStateStore(Path(directory), num_clients)
    if store.base_round() != rnd:
        raise FedloomError(f"the client store in {directory} does not hold round {rnd}")
    return dict(store.items())


_SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


def load_legacy_states(directory: Path, rnd: int) -> dict[str, Tensors]:
    """States in the older layout, one safetensors file per client and checkpointed
    round (``<id>/<round>.safetensors``), as of round ``rnd``."""
    if not directory.is_dir():
        return {}
    states = {}
    for folder in sorted(p for p in directory.iterdir() if p.is_dir()):
        path = folder / f"{rnd:06d}.safetensors"
        if _SAFE_ID.fullmatch(folder.name) and path.is_file():
            try:
                states[folder.name] = load_file(path)
            except Exception as error:  # safetensors raises its own error types
                raise FedloomError(f"corrupt client state {path}: {error}") from None
    return states
