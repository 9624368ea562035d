"""The ``logging`` section: experiment tracking backends, switched on by name.

Torch-free and backend-free: validating a config imports neither TensorBoard nor MLflow.
``active_loggers`` is the one place where these switches and the ``loggers`` list become
the loggers a run feeds.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from fedloom.core.registry import REGISTRY


class LoggingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    tensorboard: bool = False
    """TensorBoard event files in ``<run_dir>/tensorboard`` (as ``tensorboard`` in ``loggers``)."""
    mlflow: bool = False
    """Log params, every round's metrics and the final model and plots to MLflow."""
    mlflow_uri: str | None = None
    """MLflow tracking URI (``http://host:5000``, ``file:./mlruns``); unset: MLflow's own
    default (``MLFLOW_TRACKING_URI``, else its local store; ``./mlruns`` where that store
    needs SQLAlchemy and only ``mlflow-skinny`` is installed)."""
    mlflow_experiment: str = Field("fedloom", min_length=1)
    """MLflow experiment the runs are filed under (created when missing)."""
    wandb_project: str | None = Field(None, min_length=1)
    """Weights & Biases project: set, the run is logged there too (``wandb`` extra)."""
    wandb_offline: bool = False
    """Weights & Biases offline mode: the run is kept in ``<run_dir>/wandb`` for a later
    ``wandb sync``."""


def active_loggers(loggers: Sequence[str], logging: LoggingConfig) -> list[str]:
    """The loggers a run feeds: ``loggers`` in order, then each backend a ``logging``
    switch turns on, each name once (``logging.tensorboard=true`` and
    ``loggers=[tensorboard]`` are the same logger)."""
    return list(dict.fromkeys([*loggers, *_switches(logging)]))


def _switches(logging: LoggingConfig) -> dict[str, str]:
    """Logger name -> the ``logging`` setting that turned it on."""
    switches = {
        "tensorboard": "logging.tensorboard=true" if logging.tensorboard else "",
        "mlflow": "logging.mlflow=true" if logging.mlflow else "",
        "wandb": f"logging.wandb_project={logging.wandb_project}" if logging.wandb_project else "",
    }
    return {name: key for name, key in switches.items() if key}


def missing_backends(logging: LoggingConfig) -> list[str]:
    """One line per backend a ``logging`` switch turns on whose package is not installed,
    naming the pip command (``loggers`` entries are checked where that list is)."""
    problems = []
    for name, key in _switches(logging).items():
        meta = REGISTRY.component("logger", name).meta
        needed = meta.get("requires")
        if needed and importlib.util.find_spec(needed) is None:
            problems.append(
                f"{key} needs {needed}, which is not installed: "
                f"pip install 'fedloom[{meta.get('extra', needed)}]'"
            )
    return problems
