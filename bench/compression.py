"""Compression and fine-tuning benchmark: accuracy and bytes against float32, same run.

    .venv/bin/python bench/compression.py                 # digits, mlp_2nn, 10 clients
    .venv/bin/python bench/compression.py --rounds 30     # longer, closer to convergence

Part 1 trains from scratch with each codec (uplink, and downlink for the quantizers) and
compares with the lossless float32 run. Part 2 pretrains on digits 0-4, then fine-tunes
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

CODECS: list[tuple[str, list[str]]] = [
    ("float32 (none)", []),
    ("fp16", ["compression.up=fp16", "compression.down=fp16"]),
    ("bf16", ["compression.up=bf16", "compression.down=bf16"]),
    ("int8", ["compression.up=int8", "compression.down=int8"]),
    ("int4, chunk 64", ["compression.up=int4", "compression.down=int4", "compression.chunk=64"]),
    ("topk 1% + int8, EF", ["compression.up=topk:0.01+int8"]),
    (
        "topk 1% + int8, no EF",
        ["compression.up=topk:0.01+int8", "compression.error_feedback=false"],
    ),
    ("randk 10% + int8, EF", ["compression.up=randk:0.1+int8"]),
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
    summary = Experiment(cfg).run().summary
    summary["wall"] = time.perf_counter() - started
    return summary


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


def codecs(out: Path, base: list[str], rounds: int) -> None:
    scratch = [*base, f"rounds={rounds}"]
    rows = [(label, run_one(out, f"c{i}", [*scratch, *o])) for i, (label, o) in enumerate(CODECS)]
    print(table(f"Codecs: digits, from scratch, {rounds} rounds", rows, rows[0][1]))


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
    _, start_accuracy = start._evaluate(start.server.global_state)
    rows = [(label, run_one(out, f"f{i}", [*tune, *o])) for i, (label, o) in enumerate(MODES)]
    print(
        f"pretrained on digits 0-4: test accuracy {pre.test_accuracy:.4f} there, "
        f"{start_accuracy:.4f} on digits 5-9; fine-tuned on digits 5-9 (Dirichlet 1.0):"
    )
    print(table(f"Fine-tuning modes, {rounds} rounds", rows, rows[0][1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--finetune-rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--part", choices=["all", "codecs", "finetune"], default="all")
    args = parser.parse_args()
    base = [*BASE, f"seed={args.seed}"]
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("all", "codecs"):
            codecs(Path(tmp), base, args.rounds)
        if args.part in ("all", "finetune"):
            finetune(Path(tmp), base, args.finetune_rounds)


if __name__ == "__main__":
    main()
