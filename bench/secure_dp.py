"""Distributed DP inside secure aggregation against central DP at the same (ε, δ).

    .venv/bin/python bench/secure_dp.py --epsilon 8 --seeds 0 1    # 64 clients, 20 rounds
    .venv/bin/python bench/secure_dp.py --epsilon 8 --bits 12 --modes ddg-high

The same federation (logistic regression on scikit-learn's digits, ``--clients``
clients, every one in every round, so there is no amplification by sampling in either
mode) runs as:

- ``central``: user-level DP-FedAvg (``privacy.mode=central``): the trusted server clips
  each update to ``--clip``, sums, adds Gaussian noise of std ``z·clip`` on its integer
  grid; accountant ``privacy.accountant`` (``rdp`` here, the same RDP-to-(ε, δ)
  conversion as the distributed accountant; ``central-prv`` uses PRV);
- ``distributed``: ``secure.mode=secagg privacy.mode=distributed``: each client adds its
  share of discrete Gaussian noise (KLS21) inside the secure sum, accountant
  ``ddg-kls21``; ``ddg`` with the default graph and threshold ``t``, ``ddg-high`` on the
  complete graph with ``t = n − 1 − --high-threshold`` (less total noise: n·σ²/t; fewer
  dropouts tolerated);
- FedAvg without DP, for reference.

Both DP modes calibrate their noise multiplier with ``privacy.target_epsilon`` (their own
accountant, the same ``rounds`` and δ), so each reports an ε just below the target.
Prints one markdown row per (mode, ε): final test accuracy per seed and the mean, the
reported ε, the noise multiplier and the run's wall and CPU seconds.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from fedloom.config import load_config
from fedloom.experiment import Experiment


def run(overrides: list[str], out: Path) -> dict[str, Any]:
    exp = Experiment(load_config(None, [*overrides, f"output_dir={out}"]))
    start, cpu = time.perf_counter(), time.process_time()
    result = exp.run(overwrite=True)
    last = result.metrics[-1]
    notes = result.summary.get("privacy") or {}
    return {
        "accuracy": result.summary["final_test_accuracy"],
        "epsilon": last.get("epsilon"),
        "z": notes.get("noise_multiplier"),
        "wall": time.perf_counter() - start,
        "cpu": time.process_time() - cpu,
        "secure": result.summary.get("secure") or {},
    }


def modes(args: argparse.Namespace, eps: float) -> list[tuple[str, list[str]]]:
    dp = [
        f"privacy.target_epsilon={eps}",
        f"privacy.clip={args.clip}",
        f"privacy.delta={args.delta}",
    ]
    secagg = ["secure.mode=secagg", "privacy.mode=distributed", f"secure.bits={args.bits}", *dp]
    k = args.clients - 1
    t = k - args.high_threshold
    table = {
        "central": ("central (rdp)", ["privacy.mode=central", "privacy.accountant=rdp", *dp]),
        "central-prv": ("central (prv)", ["privacy.mode=central", "privacy.accountant=prv", *dp]),
        "ddg": (f"distributed, default t, {args.bits} bits", secagg),
        "ddg-high": (
            f"distributed, k={k}, t={t}, {args.bits} bits",
            [*secagg, f"secure.neighbors={k}", f"secure.threshold={t}"],
        ),
    }
    return [table[m] for m in args.modes if m in table]


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilon", type=float, nargs="+", default=[4.0, 8.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--bits", type=int, default=18, help="secure.bits of the DDG runs")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--model", default="logreg")
    parser.add_argument(
        "--high-threshold",
        type=int,
        default=3,
        help="ddg-high: DDG on the complete graph with t = n - 1 - this",
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["central", "ddg", "ddg-high", "fedavg"],
        choices=["central", "central-prv", "ddg", "ddg-high", "fedavg"],
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    base = [
        f"clients.num={args.clients}",
        f"clients.per_round={args.clients}",
        f"rounds={args.rounds}",
        f"eval_every={args.rounds}",
        f"model.name={args.model}",
        f"train.lr={args.lr}",
    ]
    print("| ε target | mode | ε reported | z | t | accuracy per seed | mean | wall s / CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        runs = [(eps, name, extra) for eps in args.epsilon for name, extra in modes(args, eps)]
        if "fedavg" in args.modes:
            runs.append((float("inf"), "FedAvg, no DP", []))
        for k, (eps, name, extra) in enumerate(runs):
            rows = [
                run([*base, f"seed={seed}", *extra], Path(tmp) / f"{k}-{seed}")
                for seed in args.seeds
            ]
            accs = [r["accuracy"] for r in rows]
            eps_out, z = rows[0]["epsilon"], rows[0]["z"]
            print(
                f"| {eps:g} | {name} | {_num(eps_out)} | {_num(z)} | "
                f"{rows[0]['secure'].get('threshold', '–')} | "
                f"{', '.join(f'{a:.4f}' for a in accs)} | {statistics.mean(accs):.4f} | "
                f"{sum(r['wall'] for r in rows):.0f} / {sum(r['cpu'] for r in rows):.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
