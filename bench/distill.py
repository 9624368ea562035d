"""Federated distillation on non-IID data: FedAvg, FedDF with one and with several
architectures, and FedMD; prints a Markdown table of accuracy and traffic.

    .venv/bin/python bench/distill.py                     # digits, then MNIST
    .venv/bin/python bench/distill.py --task digits --rounds 20 --seeds 0,1,2,3,4
    .venv/bin/python bench/distill.py --task mnist --data ../shared/data/mnist
    .venv/bin/python bench/distill.py --task digits --skip FedMD   # every method but FedMD
    .venv/bin/python bench/distill.py --only "FedDF, one" --set distill.teacher_std=2
    .venv/bin/python bench/distill.py --task digits --only "FedAvg,one" --set model.name=cnn

Every task: Dirichlet(α=0.1) over 20 clients, 10 sampled per round, the same number of
rounds for every method, seeded. FedDF and FedMD hold out 10% of the training data,
unlabeled, as distillation data / public set (the clients train on the other 90%).
FedAvg runs twice: on all the training data, and on the same clients' 90% (FedDF with
``distill.steps=0``, which is FedAvg exactly). The "mean teacher" and "mean consensus"
rows use the plain mean of the client models' class scores instead of the centered,
sharpened one (FedDF's with Adam steps following the update, ``distill.step_scale=0.3``,
which that teacher needs); "unsharpened" sets ``distill.teacher_std=null``; "no guard" and
"mean teacher" set ``distill.guard=none``.
MNIST is its official test set (10,000 images), of which 20% is the test split and the
rest is divided among the clients.
With several seeds a row shows the mean and each seed's accuracy; wall and CPU seconds
are the totals over the seeds.
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
from fedloom.models.registry import register_model
from fedloom.models.zoo import mlp_2nn

COMMON = [
    "data.partition=dirichlet",
    "data.alpha=0.1",
    "clients.num=20",
    "clients.per_round=10",
    "train.local_epochs=1",
    "train.batch_size=32",
    "train.lr=0.05",
    "compute.threads=1",
]
THREE = (
    "clients.models=[{model: mlp_2nn, fraction: 0.4}, {model: cnn, fraction: 0.3}, "
    "{model: logreg, fraction: 0.3}]"
)
MEAN = ["distill.teacher=mean", "distill.teacher_std=null"]
"""The plain mean of the client models' class scores as teacher (or consensus)."""
TWO = "clients.models=[{model: mlp_2nn, fraction: 0.5}, {model: logreg, fraction: 0.5}]"
TWIN = "clients.models=[{model: mlp_2nn, fraction: 0.5}, {model: mlp_2nn_twin, fraction: 0.5}]"
"""Half the clients on ``mlp_2nn``, half on a copy of it registered under another name: what
splitting the clients into two architectures costs when the architectures are the same."""


def runs(mixes: dict[str, str]) -> dict[str, list[str]]:
    """Every method's overrides; ``mixes``: label -> ``clients.models`` override, the first
    one also FedMD's."""
    one = ["strategy.name=feddf", "model.name=mlp_2nn"]
    methods = {
        "FedAvg, all training data": ["strategy.name=fedavg", "model.name=mlp_2nn"],
        "FedAvg, the clients' 90%": [*one, "distill.steps=0"],
        "FedDF, one arch": one,
        "FedDF, one arch, unsharpened": [*one, "distill.teacher_std=null"],
        "FedDF, one arch, no guard": [*one, "distill.guard=none"],
        "FedDF, one arch, mean teacher": [
            *one,
            *MEAN,
            "distill.step_scale=0.3",
            "distill.guard=none",
        ],
        "FedDF, one arch, mean teacher, guard": [*one, *MEAN, "distill.step_scale=0.3"],
    }
    methods |= {f"FedDF, {label}": [*one, mix] for label, mix in mixes.items()}
    label, mix = next(iter(mixes.items()))
    fedmd = ["strategy.name=fedmd", "model.name=mlp_2nn", mix]
    return methods | {
        f"FedMD, {label}": fedmd,
        f"FedMD, {label}, mean consensus": [*fedmd, *MEAN],
    }


def tasks(data_dir: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    return {
        "digits": (
            ["data.name=digits"],
            {"mlp_2nn + cnn + logreg": THREE, "mlp_2nn + logreg": TWO, "mlp_2nn + its twin": TWIN},
        ),
        "mnist": (
            ["data.name=mnist", f"data.dir={data_dir}", "data.files=test"],
            {"mlp_2nn + logreg": TWO},
        ),
    }


def run_one(overrides: list[str], out: Path) -> dict[str, Any]:
    start, cpu = time.perf_counter(), time.process_time()
    result = Experiment(load_config(None, [*overrides, f"output_dir={out}"])).run()
    last = result.metrics[-1]
    return {
        "accuracy": last["test_accuracy"],
        "by_model": last.get("test_accuracy_by_model"),
        "client_min": last.get("client_accuracy_min"),
        "mb_up": sum(m["bytes_up"] for m in result.metrics) / 1e6,
        "mb_down": sum(m["bytes_down"] for m in result.metrics) / 1e6,
        "wall_s": time.perf_counter() - start,
        "cpu_s": time.process_time() - cpu,
    }


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def row(task: str, rounds: int, name: str, results: list[dict[str, Any]]) -> str:
    """One table row: means over the seeds' ``results`` (each seed's accuracy listed)."""
    accuracy = mean([r["accuracy"] for r in results])
    seeds = (
        "" if len(results) == 1 else " (" + ", ".join(f"{r['accuracy']:.3f}" for r in results) + ")"
    )
    archs = list(results[0]["by_model"] or {})
    others = ", ".join(f"{a} {mean([r['by_model'][a] for r in results]):.3f}" for a in archs)
    if results[0]["client_min"] is not None:
        low = mean([r["client_min"] for r in results])
        others = f"client mean {accuracy:.3f}, min {low:.3f}"
    up, down = mean([r["mb_up"] for r in results]), mean([r["mb_down"] for r in results])
    return (
        f"| {task} | {rounds} | {name} | {accuracy:.3f}{seeds} | {others or '-'} | "
        f"{up:.2f} | {down:.2f} | "
        f"{sum(r['wall_s'] for r in results):.0f} | {sum(r['cpu_s'] for r in results):.0f} |"
    )


def chosen_methods(names: list[str], only: str | None, skip: str | None) -> list[str]:
    """``names`` that contain one of ``only``'s comma-separated parts (all when unset)
    and none of ``skip``'s."""
    keep = [n for n in names if only is None or any(p in n for p in only.split(","))]
    return [n for n in keep if skip is None or not any(p in n for p in skip.split(","))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["digits", "mnist", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=None, help="default: 20 digits, 10 MNIST")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
    parser.add_argument("--only", default=None, help="run only methods whose name has one of these")
    parser.add_argument("--skip", default=None, help="skip methods whose name has one of these")
    parser.add_argument(
        "--set", action="append", default=[], help="an extra override for every run (repeatable)"
    )
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).parents[1] / "../shared/data/mnist"
    )
    args = parser.parse_args()
    register_model("mlp_2nn_twin")(mlp_2nn)  # TWIN's copy; registered once per process
    logging.basicConfig(level=logging.ERROR)
    seeds = [int(s) for s in args.seeds.split(",")]
    chosen = ["digits", "mnist"] if args.task == "both" else [args.task]
    print(
        f"seeds {seeds}\n\n| data | rounds | method | test accuracy (first arch) | per model "
        "| MB up | MB down | wall s | CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for task in chosen:
            data, mixes = tasks(args.data)[task]
            rounds = args.rounds or (20 if task == "digits" else 10)
            methods = runs(mixes)
            for name in chosen_methods(list(methods), args.only, args.skip):
                base = [*COMMON, *data, *methods[name], f"rounds={rounds}", f"eval_every={rounds}"]
                base += args.set
                results = [
                    run_one([*base, f"seed={seed}"], Path(tmp) / f"{task}-{abs(hash(name))}-{seed}")
                    for seed in seeds
                ]
                print(row(task, rounds, name, results), flush=True)


if __name__ == "__main__":
    main()
