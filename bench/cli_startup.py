"""How long the command line takes to answer: ``fedloom --help``, ``--version`` and
``fedloom config`` (every key), each as a fresh process, median of ``--repeat`` runs.

Each run is a new interpreter (``python -m fedloom ...``), so the figures include Python's
own start, the imports the command needs and the printing. The goal is under 1 s for
``--help``: torch is imported only by the commands that run something.

    python bench/cli_startup.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

COMMANDS = (["--help"], ["--version"], ["config"])


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(args: list[str], repeat: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of ``repeat`` fresh ``python -m fedloom ARGS`` processes (one
    warm-up run first, so the file cache holds the modules). CPU time is what a busy
    machine's wall time would be without the waiting."""
    command = [sys.executable, "-m", "fedloom", *args]
    subprocess.run(command, check=True, capture_output=True)
    walls, cpus = [], []
    for _ in range(repeat):
        cpu, start = _children_cpu(), time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
        cpus.append(_children_cpu() - cpu)
    return walls, cpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each command")
    options = parser.parse_args()
    print(f"| command ({options.repeat} runs each) | median wall s | min wall s | median CPU s |")
    print("|---|---|---|---|")
    for args in COMMANDS:
        walls, cpus = timed(args, options.repeat)
        label = " ".join(["fedloom", *args])
        print(
            f"| `{label}` | {statistics.median(walls):.2f} | {min(walls):.2f} "
            f"| {statistics.median(cpus):.2f} |"
        )
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    print(f"(a bare `python -c pass` takes {time.perf_counter() - start:.2f} s here;")
    print(f" load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
