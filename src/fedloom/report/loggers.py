"""Metrics loggers: where each round's metrics go besides ``metrics.jsonl``.

A logger is registered under kind ``logger`` as ``factory(run_dir) -> MetricsLogger`` and
chosen by name in the config's ``loggers`` list. ``metrics.jsonl`` itself is always
written (it is the run directory's contract and what a resume truncates); a logger sees
each line after it was written there.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Protocol

from fedloom.core.errors import ConfigError
from fedloom.report.metrics import read_metrics


class MetricsLogger(Protocol):
    def log(self, metrics: dict[str, Any]) -> None:
        """One round's metrics line."""
        ...

    def close(self) -> None: ...


class CsvLogger:
    """``metrics.csv``: the metrics lines as a table, one column per field in order of
    first appearance. Rewritten from ``metrics.jsonl`` each round, so it agrees with it
    after a resume (which drops the rounds lost to a kill)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    def log(self, metrics: dict[str, Any]) -> None:
        rows = read_metrics(self.run_dir / "metrics.jsonl")
        columns = list(dict.fromkeys(key for row in rows for key in row))
        tmp = self.run_dir / "metrics.csv.tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
        tmp.replace(self.run_dir / "metrics.csv")

    def close(self) -> None:
        """Nothing is held open between rounds."""


def _cell(value: Any) -> Any:
    return "" if value is None else value


class TensorBoardLogger:
    """TensorBoard event files in ``<run_dir>/tensorboard``: every numeric metric of a
    round as a scalar (accuracy, losses, bytes, ε, client counts, round time) and the
    config as text. Needs the ``tracking`` extra (``pip install 'fedloom[tracking]'``)."""

    def __init__(self, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                ["loggers: tensorboard needs it installed: pip install 'fedloom[tracking]'"]
            ) from None
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        config = Path(run_dir) / "config.yaml"
        if config.is_file():
            self.writer.add_text("config", f"```\n{config.read_text()}\n```", 0)

    def log(self, metrics: dict[str, Any]) -> None:
        step = int(metrics["round"])
        for key, value in metrics.items():
            if key != "round" and isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
