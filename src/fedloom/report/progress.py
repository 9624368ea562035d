"""Progress on stderr: the rounds, and the long phases before and after them.

On a terminal or in a notebook a live rich bar (rich draws it as a widget in Jupyter);
anywhere else (CI logs, nohup, a pipe) one plain line per round (the word "round", its
number, the task's main metric, the loss, ε and the time) and one line per finished
phase. The command line and the Python API use the same renderer; ``quiet()`` turns it off.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

RoundDisplay = Callable[[dict[str, Any]], None]
"""Shows one round's metrics line."""

_QUIET: ContextVar[bool] = ContextVar("fedloom_quiet", default=False)


@cache
def _console() -> Console:
    return Console(stderr=True)  # writes to whatever sys.stderr is at the time


def live(console: Console | None = None) -> bool:
    """Whether a live bar can be drawn: a terminal or a notebook."""
    out = console or _console()
    return out.is_terminal or out.is_jupyter


@contextmanager
def quiet(on: bool = True) -> Iterator[None]:
    """No progress output (rounds or phases) inside the block (``verbose=False``)."""
    token = _QUIET.set(on)
    try:
        yield
    finally:
        _QUIET.reset(token)


@contextmanager
def phase(name: str, console: Console | None = None) -> Iterator[None]:
    """A long step outside the rounds (``loading data``, ``privacy calibration``,
    ``importance pass``, ``export``): a spinner with the elapsed time where a live bar
    can be drawn, else one line ``loading data: 2.1 s`` on stderr when it is done."""
    out = console or _console()
    if _QUIET.get():
        yield
    elif live(out):
        bar = Progress(SpinnerColumn(), TextColumn(name), TimeElapsedColumn(), console=out)
        with bar:
            bar.add_task(name, total=None)
            yield
    else:
        started = time.perf_counter()
        yield
        print(f"{name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)


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


@contextmanager
def round_progress(
    rounds: int, done: int, main: str, every_s: float = 0.0, console: Console | None = None
) -> Iterator[RoundDisplay]:
    """The rounds' display, given to a run as its round hook: a live bar from round
    ``done`` to ``rounds`` where one can be drawn, else ``round_lines``; nothing when quiet."""
    out = console or _console()
    if _QUIET.get():
        yield lambda metrics: None
        return
    if not live(out):
        yield round_lines(rounds, main, every_s)
        return
    bar = Progress(
        TextColumn("[bold]round"),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=out,
    )
    with bar:
        task = bar.add_task("run", total=rounds, completed=done, status="starting")
        yield lambda m: bar.update(task, completed=m["round"], status=status(m, main))
