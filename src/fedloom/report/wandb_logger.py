"""Weights & Biases tracking (``logging.wandb_project=NAME``, the ``wandb`` extra).

One W&B run per fedloom run, its files in ``<run_dir>/wandb``: the config, every round's
metrics at step = round, the update-norm histogram, and at the end the model, summary,
config and plots. ``logging.wandb_offline=true`` (or ``WANDB_MODE=offline``) keeps the run
on disk for a later ``wandb sync``. The run id is the run directory's, so
``fedloom resume`` continues the same W&B run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedloom.core.errors import ConfigError

if TYPE_CHECKING:
    from fedloom.config import FedConfig


def run_id(run_dir: Path) -> str:
    """A stable W&B run id for a run directory (W&B ids: letters and digits)."""
    return hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


class WandbLogger:
    def __init__(self, run_dir: Path) -> None:
        try:
            import wandb
        except ImportError:
            raise ConfigError(
                ["logging.wandb_project needs wandb: pip install 'fedloom[wandb]'"]
            ) from None
        self.wandb = wandb
        self.run_dir = Path(run_dir)
        self.run: Any = None
        self.finished = False

    def start(self, config: FedConfig) -> None:
        from fedloom.report.tracking import hparams

        self.run = self.wandb.init(
            project=config.logging.wandb_project,
            name=self.run_dir.name,
            id=run_id(self.run_dir),
            resume="allow",
            config=hparams(config),
            dir=str(self.run_dir),
            mode="offline" if config.logging.wandb_offline else None,
        )

    def log(self, metrics: dict[str, Any]) -> None:
        values = {k: v for k, v in metrics.items() if k != "round" and v is not None}
        self.run.log(values, step=int(metrics["round"]))

    def log_histogram(self, name: str, values: Sequence[float], step: int) -> None:
        # W&B steps only grow: the histogram joins the round's step, logged just before
        self.run.log({name: self.wandb.Histogram(list(values))}, step=step)

    def finish(self, artifacts: Sequence[Path]) -> None:
        for path in artifacts:
            self.run.save(str(path), base_path=str(self.run_dir), policy="now")
        self.finished = True

    def close(self) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if self.finished else 1)
