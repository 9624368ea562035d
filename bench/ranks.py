"""W2 as one process and as two ranks of the distributed engine, side by side.

    .venv/bin/python bench/ranks.py [--rounds 10] [--workers 2]

Both sides build the same W2 federation (``bench/scale.py``: 1000 logistic-regression
clients, 100 per round, one torch thread per process). Printed per side: the summed wall
time of the rounds (``rounds_wall_s`` of the run's summary), the whole call (for the ranks:
spawning them, their imports and builds included), the CPU time (for the ranks: all of
their processes) and the final accuracy, which must be the same on both sides.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def build(out: Path, rounds: int) -> object:
    from fedloom.experiment import Experiment
    from scale import w2_config, w2_federation

    config = w2_config(out, "off", [f"rounds={rounds}", f"eval_every={rounds}"])
    return Experiment(config, data=w2_federation())  # type: ignore[arg-type]


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    import torch

    from fedloom.simulation.distributed import spawn

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), time.process_time()
        one = build(Path(tmp) / "one", args.rounds).run().summary  # type: ignore[attr-defined]
        one_s, one_cpu = time.perf_counter() - start, time.process_time() - cpu
        start, cpu = time.perf_counter(), children_cpu_s()
        ranks = spawn(partial(build, Path(tmp) / "ranks", args.rounds), args.workers, threads=1)
        ranks_s, ranks_cpu = time.perf_counter() - start, children_cpu_s() - cpu
    print(f"W2, {args.rounds} rounds | rounds s | whole call s | CPU s | accuracy")
    print("--- | --- | --- | --- | ---")
    for name, summary, wall, used in (
        ("one process", one, one_s, one_cpu),
        (f"{args.workers} ranks", ranks, ranks_s, ranks_cpu),
    ):
        print(
            f"{name} | {summary['rounds_wall_s']:.2f} | {wall:.2f} | {used:.2f} | "
            f"{summary['final_test_accuracy']:.4f}"
        )


if __name__ == "__main__":
    main()
