"""Helpers for tests that run real processes: wait for an observed state, then SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

CLI = "from fedloom.cli import main; main()"
"""``python -c`` code that runs the ``fedloom`` command line."""


def spawn_cli(args: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    """``fedloom ARGS`` in a new process, its output appended to ``log``, ``env`` added to
    its environment. With faulthandler on, a process aborted by SIGABRT (``exit_code``)
    writes every thread's stack to ``log``."""
    full = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1", **env}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", CLI, *args], stdout=out, stderr=out, env=full
        )


def exit_code(proc: subprocess.Popen[bytes], timeout: float, log: Path) -> int:
    """``proc``'s exit status; one that has not exited within ``timeout`` seconds is
    aborted and the test fails with the end of its log, where its threads' stacks are."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        proc.wait(timeout=30)
        pytest.fail(f"the process did not exit within {timeout:g} s:\n{log.read_text()[-6000:]}")


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
