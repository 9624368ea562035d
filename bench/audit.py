"""Repeated privacy audits: how often each mechanism is flagged, and how fast.

    .venv/bin/python bench/audit.py               # 20 audits of each mechanism (~8 minutes)
    .venv/bin/python bench/audit.py --quick       # 5 of each (~2 minutes)
    .venv/bin/python bench/audit.py --mode local  # local DP (no no_clip control)
    .venv/bin/python bench/audit.py --mode dpsgd  # DP-SGD, gradient canaries (no no_clip)

Each audit is ``fedloom audit`` on a real federation (digits, 10 logreg clients, all
sampled each round, noise multiplier 1) with its own seed (data split, model, noise,
coins), ``--canaries`` rounds with one canary each (dpsgd: ``--canaries`` DP-SGD steps of
client 0, one gradient canary each), at 95% confidence. Prints a markdown
table: flag rate against the rate a Gaussian model of each mechanism predicts, the mean
lower bound, the accountant's per-round ε at the audit's δ, and seconds per audit.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import torch
from scipy.stats import binom, norm

from fedloom.config import load_config
from fedloom.privacy.audit import BROKEN, AuditResult, Broken, accuracy_lower, audit_config
from fedloom.privacy.canary import CANARY_NORM

Z = 1.0
CONFIG = [
    "data.name=digits",
    "clients.num=10",
    "clients.per_round=10",
    "rounds=10",
    "model.name=logreg",
    "train.batch_size=64",
    "privacy.clip=1.0",
    f"privacy.noise_multiplier={Z}",
]
CONFIDENCE = 0.95


def model_accuracy(broken: Broken, z: float) -> float:
    """P[guess right] if the noise were exactly Gaussian: guess "in" above ½ (in clips).
    The same for central DP and DP-SGD: a share of 1 clip, noise of std z clips."""
    out_right = norm.cdf(0.5 / z)
    if broken == "half_noise":
        return float(norm.cdf(1.0 / z))
    if broken == "no_noise":
        return 1.0
    if broken == "no_clip":  # the canary's full share, 10 clips, when in
        return float((norm.cdf((CANARY_NORM - 0.5) / z) + out_right) / 2)
    return float(out_right)


def model_flag_rate(accuracy: float, canaries: int, max_accuracy: float) -> float:
    """P[flag] when each of ``canaries`` guesses is right with ``accuracy``."""
    flagged = [
        w for w in range(canaries + 1) if accuracy_lower(w, canaries, 1 - CONFIDENCE) > max_accuracy
    ]
    return float(binom.sf(flagged[0] - 1, canaries, accuracy)) if flagged else 0.0


def audit_many(
    base: list[str], broken: Broken, audits: int, canaries: int, first_seed: int = 0
) -> tuple[list[AuditResult], float]:
    results, start = [], time.perf_counter()
    for seed in range(first_seed, first_seed + audits):
        config = load_config(None, [*base, f"seed={seed}"])
        results.append(
            audit_config(config, canaries=canaries, confidence=CONFIDENCE, broken=broken)
        )
    return results, (time.perf_counter() - start) / audits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audits", type=int, default=20, help="audits of each mechanism")
    parser.add_argument(
        "--canaries", type=int, default=200, help="canary rounds (dpsgd: steps) per audit"
    )
    parser.add_argument("--quick", action="store_true", help="5 audits of each")
    parser.add_argument("--first-seed", type=int, default=0, help="seed of the first audit")
    parser.add_argument("--mode", choices=["central", "local", "dpsgd"], default="central")
    parser.add_argument(
        "--mechanisms",
        default=",".join(BROKEN),
        help="comma-separated subset of " + ", ".join(BROKEN),
    )
    args = parser.parse_args()
    audits = 5 if args.quick else args.audits
    base = [*CONFIG, f"privacy.mode={args.mode}"]
    chosen = args.mechanisms.split(",")
    mechanisms = [b for b in BROKEN if b in chosen and (args.mode == "central" or b != "no_clip")]
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)  # the seeded-noise warning, once per audit
    audit_config(load_config(None, base), canaries=20)  # warm-up: imports, PRV claim
    print(f"config: {' '.join(base)}; {args.canaries} canaries, {CONFIDENCE:.0%} confidence\n")
    print(
        "| mechanism | audits | flagged | flag rate | Gaussian-model flag rate "
        f"| mean ε lower bound | accountant ε (per {'step' if args.mode == 'dpsgd' else 'round'}) "
        "| δ | mean right guesses | s / audit |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for broken in mechanisms:
        results, seconds = audit_many(base, broken, audits, args.canaries, args.first_seed)
        first = results[0]
        flagged = sum(r.violation for r in results)
        expected = model_flag_rate(model_accuracy(broken, Z), args.canaries, first.max_accuracy)
        print(
            f"| {broken} | {audits} | {flagged} | {flagged / audits:.2f} | {expected:.3f} "
            f"| {statistics.fmean(r.epsilon_lower for r in results):.3f} "
            f"| {first.epsilon_claimed:.3f} | {first.delta:.3f} "
            f"| {statistics.fmean(r.correct for r in results):.1f} / {args.canaries} "
            f"| {seconds:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
