"""Helpers for tests that run real processes: wait for an observed state, then SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Sequence


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    procs: Sequence[subprocess.Popen[bytes]] = (),
) -> None:
    """Poll ``condition``; fail if it is not met in ``timeout`` s or one of ``procs`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        for proc in procs:
            assert proc.poll() is None, f"process exited with {proc.returncode} while {what}"
        time.sleep(0.02)
    raise AssertionError(f"timed out: {what}")


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    """Kill ``proc`` with SIGKILL; it must still have been running."""
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
