"""Reading finished runs back, for ``fedloom compare`` and ``fedloom report``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fedloom.core.errors import ConfigError
from fedloom.report.metrics import read_metrics


@dataclass(frozen=True)
class Run:
    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]

    @property
    def main(self) -> str:
        """The metric the run is judged by (``test_accuracy``, ``test_mse``, ...)."""
        task = self.config.get("task", {}).get("name", "classification")
        return {"regression": "test_mse", "language_model": "test_perplexity"}.get(
            task, "test_accuracy"
        )


def read_run(path: str | Path) -> Run:
    """A run directory's config, summary and metrics; a ``ConfigError`` if it is not one."""
    path = Path(path)
    needed = [path / "config.yaml", path / "summary.json", path / "metrics.jsonl"]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise ConfigError([f"{path} is not a finished run (no {', '.join(missing)})"])
    try:
        config = yaml.safe_load(needed[0].read_text()) or {}
        summary = json.loads(needed[1].read_text())
        metrics = read_metrics(needed[2])
    except (yaml.YAMLError, json.JSONDecodeError) as error:
        raise ConfigError([f"{path}: unreadable run files ({error})"]) from None
    return Run(path, config, summary, metrics)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences(runs: list[Run]) -> list[str]:
    """The config keys whose values differ between the runs (``output_dir`` aside)."""
    flats = [flatten(run.config) for run in runs]
    keys = sorted({k for flat in flats for k in flat} - {"output_dir"})
    return [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1]
