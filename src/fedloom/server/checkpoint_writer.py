"""Checkpoints written on a background thread, so that a round does not wait for the disk.

A checkpoint costs little CPU (about 1 ms for a small model: the tensors and the JSON
encoded, on the round loop's thread) but two fsyncs, each a few milliseconds on a busy
disk: for a small model, more than a whole round of training. ``CheckpointWriter``
encodes the checkpoint at once (a snapshot: nothing the next round changes reaches it)
and writes it on one worker thread while the next round runs. Writes happen one at a
time, in round order, each as ``write_checkpoint`` commits it (the previous checkpoint or
the new one, whatever instant the process is killed at); ``wait()`` returns once the
last one is on disk and raises what a write raised.

So a run killed mid-round may resume from one round before the last it finished (never
from a mix of two), and replays that round: a simulated run still ends bit for bit the
same. Runs over the network write synchronously (``background=False``): their clients
may keep state across rounds that a replayed round would not match.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from fedloom.server.checkpoint import Checkpoint, encode_checkpoint, write_checkpoint

T = TypeVar("T")


class CheckpointWriter:
    """One worker thread, at most one checkpoint in flight (``background=False``: every
    checkpoint is written before ``submit`` returns)."""

    def __init__(self, directory: Path, *, background: bool = True) -> None:
        self.directory = directory
        self.background = background
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None

    def submit(self, ckpt: Checkpoint) -> None:
        """Encode ``ckpt`` now; write it in the background once the previous one is done."""
        encoded = encode_checkpoint(ckpt)
        self.wait()
        if not self.background:
            write_checkpoint(self.directory, encoded)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="fedloom-checkpoint")
        self._pending = self._pool.submit(write_checkpoint, self.directory, encoded)

    def wait(self) -> None:
        """Block until the last submitted checkpoint is committed (raising its error)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def then(self, call: Callable[[T], object], arg: T) -> None:
        """``call(arg)`` once the last submitted checkpoint is committed (a caller's hook
        that may look at the run directory)."""
        self.wait()
        call(arg)

    def close(self) -> None:
        """``wait()``, then end the worker thread."""
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
