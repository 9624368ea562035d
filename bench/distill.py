"""Federated distillation on non-IID data: FedAvg, FedDF with one and with several
architectures, and FedMD; prints a Markdown table of accuracy and traffic.

    .venv/bin/python bench/distill.py                     # digits, then MNIST
    .venv/bin/python bench/distill.py --task digits --rounds 20
    .venv/bin/python bench/distill.py --task mnist --data ../shared/data/mnist

Every task: Dirichlet(α=0.1) over 20 clients, 10 sampled per round, the same number of
rounds for every method, seeded. FedDF and FedMD hold out 10% of the training data,
unlabeled, as distillation data / public set (the clients train on the other 90%);
FedAvg trains on all of it. MNIST is its official test set (10,000 images), of which
20% is the test split and the rest is divided among the clients.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from fedloom.config import load_config
from fedloom.experiment import Experiment

COMMON = [
    "data.partition=dirichlet",
    "data.alpha=0.1",
    "clients.num=20",
    "clients.per_round=10",
    "train.local_epochs=1",
    "train.batch_size=32",
    "train.lr=0.05",
    "seed=0",
    "compute.threads=1",
]
THREE = (
    "clients.models=[{model: mlp_2nn, fraction: 0.4}, {model: cnn, fraction: 0.3}, "
    "{model: logreg, fraction: 0.3}]"
)
TWO = "clients.models=[{model: mlp_2nn, fraction: 0.5}, {model: logreg, fraction: 0.5}]"


def runs(mix: str, label: str) -> dict[str, list[str]]:
    return {
        "FedAvg (mlp_2nn)": ["strategy.name=fedavg", "model.name=mlp_2nn"],
        "FedDF, one arch (mlp_2nn)": ["strategy.name=feddf", "model.name=mlp_2nn"],
        f"FedDF, {label}": ["strategy.name=feddf", "model.name=mlp_2nn", mix],
        f"FedMD, {label}": ["strategy.name=fedmd", "model.name=mlp_2nn", mix],
    }


def tasks(data_dir: Path) -> dict[str, tuple[list[str], str, str]]:
    return {
        "digits": (["data.name=digits"], THREE, "mlp_2nn + cnn + logreg"),
        "mnist": (
            ["data.name=mnist", f"data.dir={data_dir}", "data.files=test"],
            TWO,
            "mlp_2nn + logreg",
        ),
    }


def run_one(overrides: list[str], out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    result = Experiment(load_config(None, [*overrides, f"output_dir={out}"])).run()
    last = result.metrics[-1]
    return {
        "accuracy": last["test_accuracy"],
        "by_model": last.get("test_accuracy_by_model"),
        "client_min": last.get("client_accuracy_min"),
        "mb_up": sum(m["bytes_up"] for m in result.metrics) / 1e6,
        "mb_down": sum(m["bytes_down"] for m in result.metrics) / 1e6,
        "wall_s": time.perf_counter() - start,
    }


def row(task: str, rounds: int, name: str, r: dict[str, Any]) -> str:
    others = ", ".join(f"{a} {v:.3f}" for a, v in (r["by_model"] or {}).items())
    if r["client_min"] is not None:
        others = f"client mean {r['accuracy']:.3f}, min {r['client_min']:.3f}"
    return (
        f"| {task} | {rounds} | {name} | {r['accuracy']:.3f} | {others or '-'} | "
        f"{r['mb_up']:.2f} | {r['mb_down']:.2f} | {r['wall_s']:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["digits", "mnist", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=None, help="default: 10 digits, 5 MNIST")
    parser.add_argument("--only", default=None, help="run only methods whose name has this")
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).parents[1] / "../shared/data/mnist"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    chosen = ["digits", "mnist"] if args.task == "both" else [args.task]
    print(
        "| data | rounds | method | test accuracy (first arch) | per model "
        "| MB up | MB down | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for task in chosen:
            data, mix, label = tasks(args.data)[task]
            rounds = args.rounds or (10 if task == "digits" else 5)
            for name, method in runs(mix, label).items():
                if args.only and args.only not in name:
                    continue
                overrides = [*COMMON, *data, *method, f"rounds={rounds}", f"eval_every={rounds}"]
                out = Path(tmp) / f"{task}-{len(name)}-{abs(hash(name))}"
                print(row(task, rounds, name, run_one(overrides, out)), flush=True)


if __name__ == "__main__":
    main()
