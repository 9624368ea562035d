"""W3 of the scale benchmark: a federation of 100,000 clients, 10,000 of them per round.

Workload: ``synthetic_lazy`` (Synthetic(1, 1) of Li et al. 2020, 50 samples per device,
so 100,000 × 50 × 60 float32 = 1.2 GB of raw data that is never held at once), logistic
regression, SCAFFOLD (every client keeps a control variate the size of the model), E=1,
B=10, lr 0.05, 3 rounds, one thread. Clients are built only when sampled (a pool), their
data generated from (seed, k), their control variates kept in one memory-mapped store.

The run goes in a child process, so that its peak resident memory (``ru_maxrss``, the
high-water mark of the server's process) is its own and not the caller's.

    python bench/w3.py [--clients 100000] [--per-round 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CLIENTS, PER_ROUND, ROUNDS = 100_000, 10_000, 3


def overrides(clients: int, per_round: int, rounds: int, out: Path) -> list[str]:
    return [
        "data.name=synthetic_lazy",
        "data.synthetic_samples=50",
        f"clients.num={clients}",
        f"clients.per_round={per_round}",
        f"rounds={rounds}",
        "model.name=logreg",
        "strategy.name=scaffold",
        "train.momentum=0",
        "train.local_epochs=1",
        "train.batch_size=10",
        "train.lr=0.05",
        "compute.threads=1",
        f"eval_every={rounds}",
        "seed=0",
        f"output_dir={out}",
    ]


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_here(clients: int, per_round: int, rounds: int) -> dict[str, Any]:
    """W3 in this process: wall seconds (assembly included) and peak memory."""
    from fedloom.config import load_config
    from fedloom.experiment import Experiment

    baseline = _peak_mib()
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), _cpu_s()
        experiment = Experiment(
            load_config(None, overrides(clients, per_round, rounds, Path(tmp) / "w3"))
        )
        assembled = time.perf_counter() - start
        result = experiment.run()
        wall = time.perf_counter() - start
        store = experiment.store
        return {
            "workload": "W3",
            "clients": clients,
            "per_round": per_round,
            "rounds": rounds,
            "wall_s": round(wall, 1),
            "cpu_s": round(_cpu_s() - cpu, 1),
            "assembly_s": round(assembled, 1),
            "round_s": [round(m["wall_s"], 1) for m in result.metrics],
            "peak_rss_mib": round(_peak_mib(), 1),
            "rss_after_imports_mib": round(baseline, 1),
            "store_rows": len(store.clients()),
            "store_disk_mib": round(store.disk_bytes() / 2**20, 1),
            "store_file_mib": round(
                clients * (store.layout.row_bytes if store.layout else 0) / 2**20, 1
            ),
            "clients_built": getattr(experiment.clients, "built", None),
            "final_test_accuracy": result.summary["final_test_accuracy"],
        }


def measure_w3(
    clients: int = CLIENTS, per_round: int = PER_ROUND, rounds: int = ROUNDS
) -> dict[str, Any]:
    """W3 in a child process: ``wall_s``, ``cpu_s`` (user + system, which a shared
    machine's stolen time does not inflate) and ``peak_rss_mib`` (the server process's
    resident-memory high-water mark), with the store's size and the final accuracy."""
    command = [sys.executable, __file__, "--json", f"--clients={clients}"]
    command += [f"--per-round={per_round}", f"--rounds={rounds}"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"W3 failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _table(row: dict[str, Any]) -> str:
    keys = ["clients", "per_round", "rounds", "wall_s", "cpu_s", "peak_rss_mib", "store_disk_mib"]
    keys += ["store_file_mib", "final_test_accuracy"]
    cells = [str(row[k]) if not isinstance(row[k], float) else f"{row[k]:g}" for k in keys]
    widths = [max(len(k), len(c)) for k, c in zip(keys, cells, strict=True)]
    line = lambda items: "  ".join(x.rjust(w) for x, w in zip(items, widths, strict=True))  # noqa: E731
    return "\n".join([line(keys), line(cells)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--per-round", type=int, default=PER_ROUND)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--json", action="store_true", help="run here, print one JSON line")
    args = parser.parse_args()
    if args.json:
        print(json.dumps(run_here(args.clients, args.per_round, args.rounds)))
        return
    row = measure_w3(args.clients, args.per_round, args.rounds)
    print(_table(row))
    print(json.dumps(row))


if __name__ == "__main__":
    main()
