"""MLflow tracking (``logging.mlflow=true``, the ``mlflow`` extra: ``mlflow-skinny``).

One MLflow run per fedloom run: the config as params, every numeric metric of a round
at step = round, a round's update norms as their min / median / max, and at the end the
final model (``model.safetensors``), summary, config and plots as artifacts. The MLflow
run id is kept in ``<run_dir>/mlflow.json``, so ``fedloom resume`` continues that run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from fedloom.core.errors import ConfigError

if TYPE_CHECKING:
    from fedloom.config import FedConfig

RUN_FILE = "mlflow.json"
"""``{"tracking_uri": ..., "run_id": ...}`` of the MLflow run this run directory feeds."""
MAX_PARAM_CHARS = 6000
"""MLflow refuses longer param values."""


def is_file_store(uri: str) -> bool:
    """A local directory (``file:./mlruns``, ``/abs/mlruns``) rather than a server or DB."""
    return urlparse(uri).scheme in ("", "file")


def _backend_error(uri: str, error: Exception) -> ConfigError:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ConfigError(
        [
            f"logging.mlflow_uri: MLflow cannot use the tracking store {uri!r}: {first[:300]} "
            "(set logging.mlflow_uri=file:./mlruns or to a tracking server http://HOST:PORT)"
        ]
    )


def _default_uri(mlflow: Any) -> str:
    """MLflow's own default, unless it is a database store whose drivers (SQLAlchemy and
    Alembic) ``mlflow-skinny`` lacks: then the local folder ``./mlruns``, which it reads."""
    uri = str(mlflow.get_tracking_uri())
    missing = not all(map(importlib.util.find_spec, ("sqlalchemy", "alembic")))
    if urlparse(uri).scheme.startswith("sqlite") and missing:
        return Path("mlruns").resolve().as_uri()
    return uri


class MlflowLogger:
    def __init__(self, run_dir: Path) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError(
                ["logging.mlflow needs mlflow: pip install 'fedloom[mlflow]'"]
            ) from None
        self.client_type = MlflowClient
        self.run_dir = Path(run_dir)
        self.client: Any = None
        self.run_id: str | None = None
        self.finished = False

    def start(self, config: FedConfig) -> None:
        """Open (or, on resume, reopen) the MLflow run and log the config as params."""
        import mlflow

        saved = self._saved()
        uri = saved.get("tracking_uri") or config.logging.mlflow_uri or _default_uri(mlflow)
        if is_file_store(uri):  # an explicit local store: MLflow 3 keeps it behind an opt-in
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            self.client = self.client_type(tracking_uri=uri)
            if saved.get("run_id"):
                self.run_id = str(saved["run_id"])
                self.client.update_run(self.run_id, status="RUNNING")
                return
            name = config.logging.mlflow_experiment
            found = self.client.get_experiment_by_name(name)
            experiment = found.experiment_id if found else self.client.create_experiment(name)
            run = self.client.create_run(experiment, run_name=self.run_dir.name)
        except Exception as error:  # any store failure (missing driver, bad URI, refused)
            raise _backend_error(uri, error) from None
        self.run_id = run.info.run_id
        (self.run_dir / RUN_FILE).write_text(
            json.dumps({"tracking_uri": uri, "run_id": self.run_id}) + "\n"
        )
        self._log_params(config)

    def _saved(self) -> dict[str, Any]:
        path = self.run_dir / RUN_FILE
        return dict(json.loads(path.read_text())) if path.is_file() else {}

    def _log_params(self, config: FedConfig) -> None:
        from mlflow.entities import Param

        from fedloom.report.tracking import hparams

        params = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in hparams(config).items()]
        for start in range(0, len(params), 100):  # MLflow's batch limit
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    def log(self, metrics: dict[str, Any]) -> None:
        self._log_values(
            {
                key: float(value)
                for key, value in metrics.items()
                if key != "round" and isinstance(value, int | float) and not isinstance(value, bool)
            },
            int(metrics["round"]),
        )

    def log_histogram(self, name: str, values: Sequence[float], step: int) -> None:
        """MLflow has no histograms: the spread as three series."""
        self._log_values(
            {
                f"{name}_min": min(values),
                f"{name}_median": statistics.median(values),
                f"{name}_max": max(values),
            },
            step,
        )

    def _log_values(self, values: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [Metric(key, value, stamp, step) for key, value in values.items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def finish(self, artifacts: Sequence[Path]) -> None:
        for path in artifacts:
            self.client.log_artifact(self.run_id, str(path))
        self.finished = True

    def close(self) -> None:
        if self.client is not None and self.run_id is not None:
            self.client.set_terminated(self.run_id, "FINISHED" if self.finished else "FAILED")
