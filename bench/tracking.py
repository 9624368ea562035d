"""What a tracking backend costs per round: ``log(metrics)`` plus the update-norm
histogram, for TensorBoard and MLflow (a local ``file:`` store), plus opening the
backend (import, params) and storing the artifacts. No training runs: each backend is
fed ``--rounds`` synthetic metrics lines of the shape a run writes, with ``--clients``
norms per round.

    python bench/tracking.py [--rounds 50] [--clients 10]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from fedloom.config import load_config
from fedloom.core.registry import REGISTRY


def metrics_line(rnd: int, rng: random.Random) -> dict[str, Any]:
    return {
        "round": rnd,
        "test_accuracy": rng.random(),
        "test_loss": rng.random(),
        "train_loss": rng.random(),
        "num_clients": 10,
        "num_failed": 0,
        "num_rejected": 0,
        "bytes_up": 28_000,
        "bytes_down": 28_000,
        "wall_s": rng.random(),
    }


def time_backend(name: str, rounds: int, clients: int, folder: Path) -> tuple[float, float, float]:
    """Seconds to start (incl. params), mean ms per round, seconds to finish."""
    run_dir = folder / name
    run_dir.mkdir()
    cfg = load_config(None, [f"logging.mlflow_uri=file:{folder / 'mlruns'}"])
    rng = random.Random(0)
    t0 = time.perf_counter()
    sink = REGISTRY.component("logger", name).load()(run_dir)
    sink.start(cfg)
    t1 = time.perf_counter()
    for rnd in range(1, rounds + 1):
        sink.log(metrics_line(rnd, rng))
        sink.log_histogram("update_norm", [rng.random() for _ in range(clients)], rnd)
    t2 = time.perf_counter()
    (run_dir / "model.safetensors").write_bytes(b"\0" * 4096)
    if hasattr(sink, "finish"):  # the backends that store artifacts
        sink.finish([run_dir / "model.safetensors"])
    sink.close()
    return t1 - t0, (t2 - t1) / rounds * 1000, time.perf_counter() - t2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--clients", type=int, default=10)
    options = parser.parse_args()
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    print(f"| backend | start s | per round ms ({options.clients} norms) | finish s |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("tensorboard", "mlflow"):
            start, per_round, finish = time_backend(
                name, options.rounds, options.clients, Path(tmp)
            )
            print(f"| {name} | {start:.2f} | {per_round:.1f} | {finish:.2f} |")


if __name__ == "__main__":
    main()
