"""Feeding a run to its loggers: the config at the start, each round's metrics and
update norms, the artifacts at the end.

A logger needs only ``log(metrics)`` and ``close()`` (a plugin's may stop there); the
built-in tracking backends also have the optional ``start(config)`` (params or hparams),
``log_histogram(name, values, step)`` and ``finish(artifacts)`` (model and plots of a run
that ended well), which ``Tracking`` calls where a logger has them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fedloom.core.registry import REGISTRY
from fedloom.core.tensors import Tensors
from fedloom.report.config import active_loggers
from fedloom.report.runs import flatten

if TYPE_CHECKING:
    from fedloom.config import FedConfig
    from fedloom.server.server import Server

log = logging.getLogger(__name__)

UPDATE_NORM = "update_norm"
"""The histogram of a round's accepted update norms (one value per client)."""
ARTIFACTS = ("model.safetensors", "summary.json", "config.yaml")
"""Files of a finished run a tracking backend stores, besides its plots."""


def update_norm(update: Mapping[str, torch.Tensor], names: Sequence[str]) -> float:
    """The L2 norm of the update's tensors ``names`` taken as one vector (in float64)."""
    norms = [torch.linalg.vector_norm(update[n].detach().double()) for n in names if n in update]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


class UpdateNorms:
    """An update observer keeping each round's accepted update norms until logged."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        """The model's tensors: a strategy's extras (control variates) are not counted."""
        self.rounds: dict[int, list[float]] = {}

    def observe(self, rnd: int, cid: str, update: Tensors) -> None:
        self.rounds.setdefault(rnd, []).append(update_norm(update, self.names))

    def take(self, rnd: int) -> list[float]:
        return self.rounds.pop(rnd, [])


def hparams(config: FedConfig) -> dict[str, str | int | float | bool]:
    """The config as flat scalar parameters: ``{"train.lr": 0.05, "loggers": "['csv']"}``."""
    flat = flatten(config.model_dump(mode="json"))
    return {
        key: value if isinstance(value, str | int | float | bool) else str(value)
        for key, value in flat.items()
    }


def run_artifacts(run_dir: Path) -> list[Path]:
    """The finished run's model, summary, config and plots that exist."""
    files = [run_dir / name for name in ARTIFACTS]
    return [f for f in files if f.is_file()] + sorted(run_dir.glob("*.png"))


class Tracking:
    """The loggers of one run, fed from the server's round callbacks."""

    def __init__(self, sinks: Sequence[Any], norms: UpdateNorms | None) -> None:
        self.sinks = list(sinks)
        self.norms = norms
        """None when update norms may not be released (DP without
        ``privacy.release_client_info``) or no logger is active."""
        self.server: Server | None = None

    @classmethod
    def start(cls, run_dir: Path, config: FedConfig, model_names: Sequence[str]) -> Tracking:
        """Build the config's loggers and hand each the config. Per-client figures (the
        update norms) are collected only where the privacy settings release them."""
        names = active_loggers(config.loggers, config.logging)
        sinks: list[Any] = []
        try:
            for name in names:
                sink = REGISTRY.component("logger", name, "loggers").load()(run_dir)
                sinks.append(sink)
                if hasattr(sink, "start"):
                    sink.start(config)
        except BaseException:
            for sink in sinks:
                sink.close()
            raise
        wanted = any(hasattr(sink, "log_histogram") for sink in sinks)  # norms cost per update
        releases = wanted and not config.privacy.withholds_client_info
        return cls(sinks, UpdateNorms(model_names) if releases else None)

    def watch(self, server: Server) -> None:
        """Feed the loggers from ``server``'s rounds (until ``close``)."""
        self.server = server
        server.callbacks.append(lambda _, metrics: self.log(metrics))
        if self.norms is not None:
            server.update_observers.append(self.norms.observe)

    def log(self, metrics: dict[str, Any]) -> None:
        norms = self.norms.take(metrics["round"]) if self.norms is not None else []
        if norms and len(norms) != metrics.get("num_clients"):
            # part of the round was aggregated elsewhere (other ranks): a partial
            # histogram would mislead, so none
            log.info("round %d: update norms seen for only part of the round", metrics["round"])
            norms = []
        for sink in self.sinks:
            sink.log(metrics)
            if norms and hasattr(sink, "log_histogram"):
                sink.log_histogram(UPDATE_NORM, norms, metrics["round"])

    def finish(self, run_dir: Path) -> None:
        """Hand the finished run's artifacts to the loggers that store them."""
        files = run_artifacts(run_dir)
        for sink in self.sinks:
            if hasattr(sink, "finish"):
                sink.finish(files)

    def close(self) -> None:
        if self.server is not None and self.norms is not None:
            self.server.update_observers.remove(self.norms.observe)
            self.server = None
        for sink in self.sinks:
            sink.close()
