"""Accuracy against ε: user-level DP-FedAvg on digits over many clients, and optionally
sample-level DP-SGD on MNIST.

    .venv/bin/python bench/privacy.py                       # central DP-FedAvg (a few minutes)
    .venv/bin/python bench/privacy.py --dpsgd               # + DP-SGD on ../shared/data/mnist

Prints a markdown table and writes bench/privacy.png (accuracy against ε).
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from fedloom.config import load_config  # noqa: E402
from fedloom.experiment import Experiment  # noqa: E402

EPSILONS = [1.0, 2.0, 4.0, 8.0, math.inf]

CENTRAL = [
    "data.name=digits",
    "clients.num=300",
    "clients.per_round=30",
    "rounds=30",
    "model.name=logreg",
    "train.lr=0.1",
    "train.local_epochs=2",
    "train.batch_size=10",
    "privacy.clip=1.0",
]
DPSGD = [
    "data.name=mnist",
    "data.dir=../shared/data/mnist",
    "data.files=test",
    "clients.num=10",
    "clients.per_round=10",
    "rounds=5",
    "model.name=logreg",
    "train.lr=1.0",
    "train.momentum=0",
    "train.batch_size=64",
    "privacy.clip=1.0",
]


def _run(base: list[str], mode: str, eps: float, workdir: Path) -> tuple[float, float, float]:
    privacy = (
        ["privacy.mode=none"]
        if math.isinf(eps)
        else [f"privacy.mode={mode}", f"privacy.target_epsilon={eps}"]
    )
    out = workdir / f"{mode}-{eps}"
    cfg = load_config(None, [*base, *privacy, f"output_dir={out}"])
    start = time.perf_counter()
    result = Experiment(cfg).run()
    seconds = time.perf_counter() - start
    spent = result.metrics[-1].get("epsilon", math.inf)
    return float(result.summary["final_test_accuracy"]), float(spent or math.inf), seconds


def _table(name: str, rows: list[tuple[float, float, float, float]]) -> None:
    print(f"\n{name}\n\n| target ε | ε spent (δ=1e-5) | final accuracy | seconds |")
    print("|---:|---:|---:|---:|")
    for target, acc, spent, seconds in rows:
        print(f"| {target:g} | {spent:.3f} | {acc:.3f} | {seconds:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dpsgd", action="store_true", help="also DP-SGD on MNIST")
    parser.add_argument("--plot", default="bench/privacy.png")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny models: threads only contend on a shared CPU
    workdir = Path(tempfile.mkdtemp(prefix="fedloom-bench-privacy-"))
    suites = [("central DP-FedAvg, digits, 300 clients, q=0.1, 30 rounds", CENTRAL, "central")]
    if args.dpsgd:
        suites.append(("DP-SGD, MNIST test set (10k), 10 clients, 5 rounds", DPSGD, "dpsgd"))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    try:
        for name, base, mode in suites:
            rows = [(eps, *_run(base, mode, eps, workdir)) for eps in EPSILONS]
            _table(name, rows)
            xs = [e if math.isfinite(e) else 16.0 for e, *_ in rows]
            ax.plot(xs, [acc for _, acc, _, _ in rows], marker="o", label=mode)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ax.set_xscale("log", base=2)
    ax.set_xticks([1, 2, 4, 8, 16], ["1", "2", "4", "8", "∞"])
    ax.set_xlabel("ε (δ = 1e-5)")
    ax.set_ylabel("final test accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
