"""One line per round for wherever a live bar cannot be drawn (CI logs, nohup, the Python
API): the word "round", its number, the task's main metric, the loss, ε and the time."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def status(metrics: dict[str, Any], main: str) -> str:
    """``acc 0.9123  loss 0.2841  train 0.3012  ε 1.2 (δ 1e-05)`` for one metrics line."""
    label = "acc" if main == "accuracy" else main
    text = f"{label} {_fmt(metrics.get(f'test_{main}'))}  " if main != "loss" else ""
    text += f"loss {_fmt(metrics.get('test_loss'))}  train {_fmt(metrics.get('train_loss'))}"
    if metrics.get("epsilon") is not None:
        text += f"  ε {metrics['epsilon']:.3g} (δ {metrics['delta']:g})"
    return text


def round_lines(
    rounds: int, main: str, every_s: float = 0.0, stream: TextIO | None = None
) -> Callable[[dict[str, Any]], None]:
    """A round callback printing ``round 3/20  acc ...  12.3 s`` to ``stream`` (stderr),
    at most once every ``every_s`` seconds (the last round always)."""
    started = time.perf_counter()
    last = -float("inf")

    def show(metrics: dict[str, Any]) -> None:
        nonlocal last
        now = time.perf_counter()
        if now - last < every_s and metrics["round"] != rounds:
            return
        last = now
        line = f"round {metrics['round']}/{rounds}  {status(metrics, main)}  {now - started:.1f} s"
        print(line, file=stream or sys.stderr, flush=True)

    return show
