"""Adaptive privacy budgets on MNIST: noise schedules at the same final ε, and two
privacy tiers against everyone at the strictest ε. User-level central DP-FedAvg, 300
clients, logistic regression, 3 seeds.

    .venv/bin/python bench/adaptive.py                   # about 6 minutes on 2 busy cores
    .venv/bin/python bench/adaptive.py --seeds 0 --rounds 10   # a quick look

Needs the MNIST files in ../shared/data/mnist (the t10k set is enough: data.files=test).
Prints a markdown table: final test accuracy (mean ± std over seeds), final ε (and ε per
tier). ε comes from the RDP accountant (privacy.accountant=rdp): PRV would cost a few
seconds per round with 30 distinct multipliers, and the comparison is the same.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fedloom.config import load_config
from fedloom.experiment import Experiment

BASE = [
    "data.name=mnist",
    "data.dir=../shared/data/mnist",
    "data.files=test",
    "clients.num=300",
    "clients.per_round=30",
    "model.name=logreg",
    "train.lr=0.1",
    "train.local_epochs=1",
    "train.batch_size=16",
    "privacy.mode=central",
    "privacy.clip=1.0",
    "privacy.accountant=rdp",
    "eval_every=1000",
]
TWO_TIERS = "privacy.tiers=[{epsilon: 1, fraction: 0.7}, {epsilon: 8, fraction: 0.3}]"
RUNS: dict[str, list[str]] = {
    "constant, ε=3": ["privacy.target_epsilon=3"],
    "linear 1→0.5, ε=3": [
        "privacy.target_epsilon=3",
        "privacy.schedule=linear",
        "privacy.final_noise_ratio=0.5",
    ],
    "cosine 1→0.5, ε=3": [
        "privacy.target_epsilon=3",
        "privacy.schedule=cosine",
        "privacy.final_noise_ratio=0.5",
    ],
    "uniform ε=1": ["privacy.target_epsilon=1"],
    "tiers ε=1 (70%) / ε=8 (30%)": [TWO_TIERS],
}


def _run(args: list[str], seed: int, rounds: int, workdir: Path) -> tuple[float, dict]:
    out = workdir / f"run-{time.perf_counter_ns()}"
    cfg = load_config(None, [*BASE, *args, f"rounds={rounds}", f"seed={seed}", f"output_dir={out}"])
    result = Experiment(cfg).run()
    return float(result.summary["final_test_accuracy"]), result.metrics[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=30)
    opts = parser.parse_args()
    torch.set_num_threads(1)
    print(f"rounds={opts.rounds} seeds={opts.seeds} " + " ".join(BASE))
    print("\n| run | accuracy (mean ± std) | per seed | final ε (by tier) | rate by tier | s |")
    print("|---|---:|---|---:|---|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in RUNS.items():
            start = time.perf_counter()
            accs, last = [], {}
            for seed in opts.seeds:
                acc, last = _run(args, seed, opts.rounds, Path(tmp))
                accs.append(acc)
            spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
            by_tier = last.get("epsilon_by_tier")
            eps = f"{last['epsilon']:.3f}" + (
                " (" + ", ".join(f"{e:.3f}" for e in by_tier) + ")" if by_tier else ""
            )
            rates = last.get("sample_rate_by_tier") or [0.1]
            print(
                f"| {name} | {100 * statistics.mean(accs):.2f} ± {100 * spread:.2f} | "
                + ", ".join(f"{100 * a:.2f}" for a in accs)
                + f" | {eps} | {', '.join(f'{q:.3f}' for q in rates)} | "
                f"{time.perf_counter() - start:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
