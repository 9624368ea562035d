"""Strategies under heterogeneity and under attack; prints Markdown tables.

    .venv/bin/python bench/strategies.py            # both tables, a few minutes on 2 CPU cores
    .venv/bin/python bench/strategies.py --only attacks --rounds 10

(a) FedAvg, FedProx, SCAFFOLD and FedAdam on Synthetic(1,1) and on Dirichlet(α=0.1) digits:
    rounds to a target test accuracy and final accuracy.
(b) 20% attacking clients: final accuracy of FedAvg, median, trimmed mean and Krum for each
    attack (sign flip, scaling ×50, Gaussian noise, label flipping).
Every run is seeded; the same command prints the same accuracies.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from fedloom.config import load_config
from fedloom.experiment import Experiment

COMMON = ["model.name=logreg", "train.momentum=0", "eval_every=1"]

TASKS: dict[str, tuple[list[str], float]] = {
    # (overrides, target accuracy)
    "Synthetic(1,1)": (
        [
            "data.name=synthetic",
            "data.synthetic_alpha=1",
            "data.synthetic_beta=1",
            "clients.num=30",
            "clients.per_round=10",
            "train.local_steps=20",
            "train.batch_size=10",
            "train.lr=0.05",
        ],
        0.7,
    ),
    "digits Dirichlet(0.1)": (
        [
            "data.name=digits",
            "data.partition=dirichlet",
            "data.alpha=0.1",
            "clients.num=10",
            "clients.per_round=10",
            "train.local_steps=20",
            "train.batch_size=10",
            "train.lr=0.05",
        ],
        0.85,
    ),
}

STRATEGIES: dict[str, list[str]] = {
    "FedAvg": ["strategy.name=fedavg"],
    "FedProx (mu=0.1)": ["strategy.name=fedprox", "strategy.mu=0.1"],
    "SCAFFOLD": ["strategy.name=scaffold"],
    "FedAdam (lr=0.03)": ["strategy.name=fedadam", "strategy.server_lr=0.03"],
}

ATTACKS: dict[str, list[str]] = {
    "none": ["attack.kind=none"],
    "sign flip": ["attack.kind=sign_flip"],
    "scale x50": ["attack.kind=scale", "attack.scale=50"],
    "gaussian (std 1)": ["attack.kind=gaussian", "attack.noise_std=1"],
    "label flip": ["attack.kind=label_flip"],
}

AGGREGATORS: dict[str, list[str]] = {
    "FedAvg (mean)": ["strategy.aggregator=mean"],
    "median": ["strategy.aggregator=median"],
    "trimmed mean (b=0.2)": ["strategy.aggregator=trimmed_mean", "strategy.trim_beta=0.2"],
    "Krum (f=2)": ["strategy.aggregator=krum", "strategy.krum_f=2"],
}

ATTACK_BASE = [
    "data.name=digits",
    "clients.num=10",
    "clients.per_round=10",
    "train.batch_size=16",
    "train.lr=0.05",
    "train.momentum=0.9",
    "attack.fraction=0.2",
]


def run(overrides: list[str], workdir: Path) -> tuple[list[float], float]:
    out = Path(tempfile.mkdtemp(dir=workdir))
    start = time.perf_counter()
    result = Experiment(load_config(None, [*overrides, f"output_dir={out}"])).run()
    accuracies = [m["test_accuracy"] for m in result.metrics]
    return accuracies, time.perf_counter() - start


def heterogeneity(rounds: int, workdir: Path) -> None:
    for task, (task_overrides, target) in TASKS.items():
        print(f"\n### {task}: {rounds} rounds, target accuracy {target:.2f}\n")
        print("| strategy | rounds to target | final accuracy | best accuracy | seconds |")
        print("|---|---:|---:|---:|---:|")
        for name, overrides in STRATEGIES.items():
            acc, seconds = run([*COMMON, *task_overrides, *overrides, f"rounds={rounds}"], workdir)
            hit = next((r + 1 for r, a in enumerate(acc) if a >= target), None)
            reached = str(hit) if hit is not None else f"> {rounds}"
            print(f"| {name} | {reached} | {acc[-1]:.3f} | {max(acc):.3f} | {seconds:.1f} |")


def attacks(rounds: int, workdir: Path) -> None:
    print(f"\n### digits (iid), 10 clients, 2 attackers, {rounds} rounds: final accuracy\n")
    print("| attack | " + " | ".join(AGGREGATORS) + " |")
    print("|---|" + "---:|" * len(AGGREGATORS))
    for attack, attack_overrides in ATTACKS.items():
        cells = []
        for overrides in AGGREGATORS.values():
            config = ["model.name=logreg", *ATTACK_BASE, *attack_overrides, *overrides]
            acc, _ = run([*config, f"rounds={rounds}"], workdir)
            cells.append(f"{acc[-1]:.3f}")
        print(f"| {attack} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="rounds per heterogeneity run")
    parser.add_argument("--attack-rounds", type=int, default=10, help="rounds per attack run")
    parser.add_argument("--only", choices=["heterogeneity", "attacks"], default=None)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # rejected/failed-client warnings are expected here
    torch.set_num_threads(1)  # tiny models: extra threads only fight over a shared CPU
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "heterogeneity"):
            heterogeneity(args.rounds, Path(tmp))
        if args.only in (None, "attacks"):
            attacks(args.attack_rounds, Path(tmp))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
