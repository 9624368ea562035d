"""Metrics loggers: where each round's metrics go besides ``metrics.jsonl``.

A logger is registered under kind ``logger`` as ``factory(run_dir) -> MetricsLogger`` and
chosen by name in the config's ``loggers`` list (or, for the built-in tracking backends,
by a ``logging.*`` switch: ``fedloom.report.config.active_loggers``). The optional
methods a logger may add are in ``fedloom.report.tracking``. ``metrics.jsonl`` itself is always
written (it is the run directory's contract and what a resume truncates); a logger sees
each line after it was written there.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from fedloom.core.errors import ConfigError
from fedloom.report.metrics import read_metrics

if TYPE_CHECKING:
    from fedloom.config import FedConfig


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
    round as a scalar (accuracy, losses, bytes, ε, client counts, round time), the
    histogram of the round's update norms, and the config as text and as hparams. Needs
    the ``tracking`` extra (``pip install 'fedloom[tracking]'``)."""

    def __init__(self, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                ["logging.tensorboard needs tensorboard: pip install 'fedloom[tracking]'"]
            ) from None
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def start(self, config: FedConfig) -> None:
        """The config as text and as hparams (the HParams tab), the test metrics as the
        hparams' metrics."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        from fedloom.config import to_yaml
        from fedloom.report.tracking import hparams

        self.writer.add_text("config", f"```\n{to_yaml(config)}\n```", 0)
        metrics = {"test_accuracy": 0.0, "test_loss": 0.0}
        events = self.writer._get_file_writer()  # the run's own file: one run in the table
        for summary in hparams_summary(hparams(config), metrics):
            events.add_summary(summary)

    def log(self, metrics: dict[str, Any]) -> None:
        step = int(metrics["round"])
        for key, value in metrics.items():
            if key != "round" and isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def log_histogram(self, name: str, values: Sequence[float], step: int) -> None:
        self.writer.add_histogram(name, np.asarray(values, dtype=np.float64), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
