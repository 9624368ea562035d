"""Stopping ``fedloom server`` on SIGINT or SIGTERM: abandon the open round, keep the last
checkpoint, tell the clients to retry.

The first signal raises ``Interrupted`` in the main thread wherever it is (waiting for
clients, waiting for updates, aggregating, writing a checkpoint). That is always safe:
a checkpoint's state file is replaced atomically after its tensors are on disk, so the
run directory holds the last completed round's checkpoint whatever was interrupted, and
a restart on it resumes from there (exactly as after a SIGKILL). Later signals are
ignored while the server tells its clients to retry and shuts down.

The OS may hand the signal to any thread, one of gRPC's included; Python runs the handler
in the main thread only when that thread next executes Python code, so the transport
never blocks the main thread for longer than ``WAKE_S`` at a time.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from fedloom.core.errors import Interrupted

__all__ = ["SIGNALS", "Interrupted", "stop_on_signals"]

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block (in the main thread), the first SIGINT or SIGTERM raises
    ``Interrupted``; the previous handlers come back on exit."""
    raised = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal raised
        if raised:
            log.warning("%s: already stopping", signal.Signals(signum).name)
            return
        raised = True
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
