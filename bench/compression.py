"""Compression and fine-tuning benchmark: accuracy and bytes against float32, same run.

    .venv/bin/python bench/compression.py --part codecs   # digits, default cnn, 20 rounds
    .venv/bin/python bench/compression.py --part codecs --rounds 50 --target 0.95
    .venv/bin/python bench/compression.py --part codecs --data mnist --target 0.97

Part 1 trains from scratch with each codec (uplink, and downlink for the quantizers) with
the default federation (cnn, 10 clients all taking part) and compares with the lossless
float32 run: final accuracy at equal rounds, and the bytes sent until the test accuracy
first reaches ``--target``. Part 2 pretrains mlp_2nn on digits 0-4, then fine-tunes it
federatedly on digits 5-9 (Dirichlet non-IID) with each finetune.mode, compared with full
fine-tuning. Ratios are bytes of the reference row / bytes of the row, so 4.0x means a
quarter of the bytes. Every run has the same seed, data split and client sampling.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from fedloom.config import load_config
from fedloom.experiment import Experiment
from fedloom.finetune.pretrain import pretrain

BASE = ["model.name=mlp_2nn", "clients.num=10", "clients.per_round=5", "train.batch_size=16"]
DATA = {
    "digits": [],
    # only the t10k files ship here: 8,000 images train, 2,000 test
    "mnist": ["data.name=mnist", "data.dir=../shared/data/mnist", "data.files=test"],
}
NO_DGC = ["compression.momentum=0", "compression.clip=null", "compression.warmup_rounds=0"]

CODECS: list[tuple[str, list[str]]] = [
    ("float32 (none)", []),
    ("fp16", ["compression.up=fp16", "compression.down=fp16"]),
    ("int8", ["compression.up=int8", "compression.down=int8"]),
    ("int4, chunk 64", ["compression.up=int4", "compression.down=int4", "compression.chunk=64"]),
    ("topk 1% + int8 (DGC)", ["compression.up=topk:0.01+int8"]),
    ("topk 1% + int8, EF only", ["compression.up=topk:0.01+int8", *NO_DGC]),
    (
        "topk 1% + int8, no EF",
        ["compression.up=topk:0.01+int8", "compression.error_feedback=false", *NO_DGC],
    ),
    ("topk 0.1% (DGC)", ["compression.up=topk:0.001"]),
    ("topk 0.1% + int8 (DGC)", ["compression.up=topk:0.001+int8"]),
    ("randk 10% + int8 (DGC)", ["compression.up=randk:0.1+int8"]),
    ("prune 80% (global model)", ["compression.prune=0.8", "compression.prune_ramp=5"]),
]

MODES: list[tuple[str, list[str]]] = [
    ("full", ["finetune.mode=full"]),
    ("last layer", ["finetune.mode=last_k", "finetune.last_k=1"]),
    ("importance 10%", ["finetune.mode=importance", "finetune.fraction=0.1"]),
    # the head for the new classes trains fully (finetune.names), the rest gets adapters
    ("LoRA r=4 + head", ["finetune.mode=lora", "finetune.lora_rank=4", "finetune.names=['5.*']"]),
    (
        "LoRA r=4 + head, int8",
        [
            "finetune.mode=lora",
            "finetune.names=['5.*']",
            "compression.up=int8",
            "compression.down=int8",
        ],
    ),
]


def run_one(out: Path, name: str, overrides: list[str]) -> dict[str, Any]:
    cfg = load_config(None, [*overrides, f"output_dir={out / name}"])
    started = time.perf_counter()
    result = Experiment(cfg).run()
    summary = dict(result.summary)
    summary["wall"] = time.perf_counter() - started
    summary["rounds_log"] = [
        (m["round"], m["test_accuracy"], m["bytes_up"], m["bytes_down"]) for m in result.metrics
    ]
    summary["warmup_rounds"] = cfg.compression.warmup_rounds
    return summary


def to_target(s: dict[str, Any], target: float) -> tuple[int, int, int] | None:
    """(round, bytes up, bytes up and down) until the test accuracy first reaches target."""
    up = total = 0
    for rnd, accuracy, bytes_up, bytes_down in s["rounds_log"]:
        up, total = up + bytes_up, total + bytes_up + bytes_down
        if accuracy is not None and accuracy >= target:
            return rnd, up, total
    return None


def steady_up(s: dict[str, Any]) -> float:
    """Mean uplink bytes of a round after the density warm-up (all rounds if none)."""
    log = s["rounds_log"]
    after = [b for rnd, _, b, _ in log if rnd > s["warmup_rounds"]] or [b for _, _, b, _ in log]
    return sum(after) / len(after)


def target_table(
    title: str, rows: list[tuple[str, dict[str, Any]]], ref: dict[str, Any], target: float
) -> str:
    lines = [
        f"### {title}",
        "",
        f"| run | final acc | Δ acc (pt) | up ratio | up ratio after warm-up "
        f"| round to {target:.0%} | bytes up to {target:.0%} | up ratio to {target:.0%} "
        f"| total ratio to {target:.0%} |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    ref_hit = to_target(ref, target)
    for label, s in rows:
        hit = to_target(s, target)
        if hit is None or ref_hit is None:
            reach = "not reached |  |  | " if hit is None else f"{hit[0]} | {hit[1]:,} |  | "
        else:
            reach = (
                f"{hit[0]} | {hit[1]:,} | {ref_hit[1] / hit[1]:.1f}x | {ref_hit[2] / hit[2]:.1f}x"
            )
        lines.append(
            f"| {label} | {s['final_test_accuracy']:.4f} "
            f"| {100 * (s['final_test_accuracy'] - ref['final_test_accuracy']):+.2f} "
            f"| {ref['total_bytes_up'] / s['total_bytes_up']:.1f}x "
            f"| {steady_up(ref) / steady_up(s):.1f}x | {reach} |"
        )
    return "\n".join(lines)


def table(title: str, rows: list[tuple[str, dict[str, Any]]], ref: dict[str, Any]) -> str:
    lines = [
        f"### {title}",
        "",
        "| run | final acc | Δ acc (pt) | params trained | bytes up | bytes down "
        "| up ratio | total ratio | s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    ref_total = ref["total_bytes_up"] + ref["total_bytes_down"]
    for label, s in rows:
        total = s["total_bytes_up"] + s["total_bytes_down"]
        lines.append(
            f"| {label} | {s['final_test_accuracy']:.4f} "
            f"| {100 * (s['final_test_accuracy'] - ref['final_test_accuracy']):+.2f} "
            f"| {s['num_parameters']:,} | {s['total_bytes_up']:,} | {s['total_bytes_down']:,} "
            f"| {ref['total_bytes_up'] / s['total_bytes_up']:.1f}x | {ref_total / total:.1f}x "
            f"| {s['wall']:.0f} |"
        )
    return "\n".join(lines)


def codecs(out: Path, args: argparse.Namespace) -> None:
    scratch = [*DATA[args.data], f"seed={args.seed}", f"rounds={args.rounds}"]
    # the float32 row is the reference of every ratio: it always runs
    chosen = [(i, c) for i, c in enumerate(CODECS) if not args.only or i in {0, *args.only}]
    rows = []
    for i, (label, overrides) in chosen:
        rows.append((label, run_one(out, f"c{i}", [*scratch, *overrides])))
        print(f"{label}: {rows[-1][1]['final_test_accuracy']:.4f}", flush=True)
    title = f"Codecs: {args.data}, cnn, from scratch, {args.rounds} rounds"
    print(table(title, rows, rows[0][1]))
    print()
    print(target_table(f"{title}: bytes to {args.target:.0%}", rows, rows[0][1], args.target))


def finetune(out: Path, base: list[str], rounds: int) -> None:
    ckpt = out / "digits04.safetensors"
    pre = pretrain(load_config(None, [*base, "data.classes=[0,1,2,3,4]"]), ckpt, epochs=5)
    tune = [
        *base,
        f"rounds={rounds}",
        "data.classes=[5,6,7,8,9]",
        "data.partition=dirichlet",
        "data.alpha=1.0",
        "train.local_epochs=2",
        f"model.checkpoint={ckpt}",
    ]
    start = Experiment(load_config(None, [*tune, f"output_dir={out / 'start'}"]))
    start_accuracy = start._evaluate(start.server.global_state)["test_accuracy"]
    rows = [(label, run_one(out, f"f{i}", [*tune, *o])) for i, (label, o) in enumerate(MODES)]
    print(
        f"pretrained on digits 0-4: test accuracy {pre.test_accuracy:.4f} there, "
        f"{start_accuracy:.4f} on digits 5-9; fine-tuned on digits 5-9 (Dirichlet 1.0):"
    )
    print(table(f"Fine-tuning modes, {rounds} rounds", rows, rows[0][1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--data", choices=sorted(DATA), default="digits")
    parser.add_argument("--target", type=float, default=0.95, help="test accuracy to reach")
    parser.add_argument(
        "--only", type=int, nargs="*", help="row numbers of the codec table to run (0: float32)"
    )
    parser.add_argument("--finetune-rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--part", choices=["all", "codecs", "finetune"], default="all")
    args = parser.parse_args()
    base = [*BASE, f"seed={args.seed}"]
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("all", "codecs"):
            codecs(Path(tmp), args)
        if args.part in ("all", "finetune"):
            finetune(Path(tmp), base, args.finetune_rounds)


if __name__ == "__main__":
    main()
