"""fedloom on a GPU: per-round wall time and accuracy, against the CPU.

    .venv/bin/python bench/gpu_check.py [--rounds 20] [--device cuda] [--data DIR]

Three workloads, each on the CPU and on ``--device``:

- ``default``: the default federation (digits, ``cnn``);
- ``W1``: 100 clients of the dropout-free CNN, 10 per round, E=1, B=10 (``bench/scale.py``)
  on the real MNIST test set in ``--data``, or on random MNIST-shaped images where that
  directory is absent (per-round times only depend on the shapes);
- ``W2``: 1000 logistic-regression clients, 100 per round (``bench/scale.py``).

With two GPUs or more, W1 and W2 also run as two ranks (one GPU each, NCCL). Where no GPU
exists it says so and exits 0. Both devices use the same seed; the GPU's accuracy may
differ in the last digits (other kernels), so the table prints both.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from fedloom.config import load_config
from fedloom.experiment import Experiment

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # bench/scale.py and bench/overhead.py define W1 and W2


def timed(experiment: Experiment) -> tuple[list[float], float]:
    """Per-round wall times (seconds between round ends) and the final test accuracy."""
    times: list[float] = []
    last = time.perf_counter()

    def tick(metrics: dict[str, object]) -> None:
        nonlocal last
        now = time.perf_counter()
        times.append(now - last)
        last = now

    result = experiment.run(on_round=tick)
    return times, float(result.summary["final_test_accuracy"])


def default_run(device: str, rounds: int, out: Path) -> Experiment:
    config = load_config(
        None, [f"rounds={rounds}", f"compute.device={device}", f"output_dir={out}"]
    )
    return Experiment(config)


def w1_run(data: Path, device: str, rounds: int, out: Path) -> Experiment:
    from fedloom.data.base import TensorData
    from fedloom.data.federated import federate_tensors
    from overhead import CLIENTS, OVERRIDES
    from scale import w1_model, w1_split

    if data.is_dir():
        x, y = w1_split(data)
    else:  # MNIST's shapes and size; the values do not change the time
        gen = torch.Generator().manual_seed(0)
        x, y = (
            torch.rand(10_000, 1, 28, 28, generator=gen),
            torch.randint(0, 10, (10_000,), generator=gen),
        )
    cfg = load_config(
        None,
        [
            *OVERRIDES,
            "seed=0",
            f"rounds={rounds}",
            f"eval_every={rounds}",
            f"compute.device={device}",
            f"output_dir={out}",
        ],
    )
    split = TensorData(x, y)
    fed = federate_tensors(split, split, CLIENTS, cfg.data, 0)
    torch.manual_seed(0)
    return Experiment(cfg, model=w1_model(tuple(x.shape[1:]), 10), data=fed)  # type: ignore[arg-type]


def w2_run(device: str, rounds: int, out: Path) -> Experiment:
    from scale import w2_config, w2_federation

    config = w2_config(
        out, "off", [f"rounds={rounds}", f"eval_every={rounds}", f"compute.device={device}"]
    )
    return Experiment(config, data=w2_federation())  # type: ignore[arg-type]


def two_ranks(build: Any) -> tuple[list[float], float]:
    """The workload as two ranks on two GPUs: mean per-round time from the summary."""
    from fedloom.simulation.distributed import spawn

    summary = spawn(build, 2)
    per_round = float(summary["rounds_wall_s"]) / max(int(summary["rounds"]), 1)
    return [per_round, per_round], float(summary["final_test_accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--data", type=Path, default=HERE.parent / "../shared/data/mnist")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device on this machine: nothing to check")
        return
    rows: list[tuple[str, str, list[float], float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for device in ("cpu", args.device):
            runs = {
                "default": partial(default_run, device, args.rounds),
                "W1": partial(w1_run, args.data, device, args.rounds),
                "W2": partial(w2_run, device, args.rounds),
            }
            for name, build in runs.items():
                rows.append((name, device, *timed(build(Path(tmp) / f"{name}-{device}"))))
        if args.device == "cuda" and torch.cuda.device_count() >= 2:
            for name, build in {
                "W1": partial(w1_run, args.data, "cuda", args.rounds, Path(tmp) / "W1-ranks"),
                "W2": partial(w2_run, "cuda", args.rounds, Path(tmp) / "W2-ranks"),
            }.items():
                rows.append((name, "cuda, 2 ranks", *two_ranks(build)))
    print("| workload | device | mean s/round | first round s | final accuracy |")
    print("| --- | --- | --- | --- | --- |")
    for name, device, times, accuracy in rows:
        mean = sum(times[1:]) / max(len(times) - 1, 1)
        print(f"| {name} | {device} | {mean:.3f} | {times[0]:.3f} | {accuracy:.4f} |")


if __name__ == "__main__":
    main()
