"""``fedloom run simulation.workers=K``: start K ranks of the same command on this host.

It does what ``torchrun --standalone --nproc_per_node=K -m fedloom ...`` does: every child
runs ``python -m fedloom`` with the parent's arguments and the environment torchrun would
set (rank, world size, a free loopback port as the rendezvous). If one rank fails, the
others are given ``grace_s`` to stop on their own (their next collective fails at once)
and are then terminated, so the launcher never hangs on a dead federation.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence

from fedloom.terminal import console

GRACE_S = 30.0
"""How long the other ranks may take to stop after one has failed."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def rank_env(
    base: Mapping[str, str], rank: int, workers: int, port: int, threads: int | None
) -> dict[str, str]:
    """torchrun's variables for rank ``rank`` of ``workers`` on this host."""
    env = {
        **base,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": str(workers),
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "LOCAL_WORLD_SIZE": str(workers),
    }
    if threads is not None and "OMP_NUM_THREADS" not in base:
        env["OMP_NUM_THREADS"] = str(threads)  # K ranks must not each take every core
    return env


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def launch(
    argv: Sequence[str],
    workers: int,
    *,
    threads: int | None = None,
    grace_s: float = GRACE_S,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run ``python -m fedloom *argv`` as ranks 0..workers-1; 0 when all of them succeed,
    else the first failing rank's exit code (1 for a signal). ``threads`` sets each rank's
    OMP_NUM_THREADS (default: this host's cores shared out)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    base = dict(os.environ if env is None else env)
    share = threads if threads is not None else max(1, (os.cpu_count() or 1) // workers)
    port = free_port()
    command = [sys.executable, "-m", "fedloom", *argv]
    procs = [
        subprocess.Popen(command, env=rank_env(base, r, workers, port, share))
        for r in range(workers)
    ]
    ended: queue.Queue[tuple[int, int]] = queue.Queue()
    for rank, proc in enumerate(procs):
        threading.Thread(
            target=lambda r=rank, p=proc: ended.put((r, p.wait())), daemon=True
        ).start()
    failure: tuple[int, int] | None = None
    pending = set(range(workers))
    try:
        while pending:
            try:
                rank, code = ended.get(timeout=None if failure is None else grace_s)
            except queue.Empty:
                break  # the survivors did not stop within the grace period
            pending.discard(rank)
            if code != 0 and failure is None:
                failure = (rank, code)
                console.print(
                    f"[red]fedloom:[/] rank {rank} of {workers} {_describe(code)}; "
                    "stopping the other ranks"
                )
    finally:
        for rank in sorted(pending):
            procs[rank].terminate()
        for rank in sorted(pending):
            try:
                procs[rank].wait(timeout=10)
            except subprocess.TimeoutExpired:
                procs[rank].kill()
                procs[rank].wait()
    if failure is None:
        return 0
    return failure[1] if failure[1] > 0 else 1
