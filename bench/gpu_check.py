"""The default federation on a GPU: per-round wall time and accuracy, against the CPU.

    .venv/bin/python bench/gpu_check.py [--rounds 20] [--device cuda]

Where no GPU exists it says so and exits 0. Both runs use the same seed; on the CPU
the result is the default demo's, on the GPU it may differ in the last digits (other
kernels), so the table prints both accuracies.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from fedloom.config import load_config
from fedloom.experiment import Experiment


def run(device: str, rounds: int, out: Path) -> tuple[list[float], float]:
    config = load_config(
        None, [f"rounds={rounds}", f"compute.device={device}", f"output_dir={out}"]
    )
    experiment = Experiment(config)
    times: list[float] = []
    last = time.perf_counter()

    def tick(metrics: dict[str, object]) -> None:
        nonlocal last
        now = time.perf_counter()
        times.append(now - last)
        last = now

    result = experiment.run(on_round=tick)
    return times, float(result.summary["final_test_accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device on this machine: nothing to check")
        return
    with tempfile.TemporaryDirectory() as tmp:
        rows = [(d, *run(d, args.rounds, Path(tmp) / d)) for d in ("cpu", args.device)]
    print("| device | mean s/round | first round s | final accuracy |")
    print("| --- | --- | --- | --- |")
    for device, times, accuracy in rows:
        mean = sum(times[1:]) / max(len(times) - 1, 1)
        print(f"| {device} | {mean:.3f} | {times[0]:.3f} | {accuracy:.4f} |")


if __name__ == "__main__":
    main()
