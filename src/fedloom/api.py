"""The Python API: federate your own model and dataset in a few lines.

result = fedloom.federate(MyNet(), train_set, test_set, {"clients.num": 20, "rounds": 10})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from fedloom.config import load_config, nest
from fedloom.core.errors import ConfigError
from fedloom.data.base import from_torch_dataset
from fedloom.data.config import CUSTOM_DATA
from fedloom.data.federated import federate_tensors
from fedloom.experiment import Experiment, RoundHook, RunResult


def federate(
    model: nn.Module,
    train: Dataset[Any],
    test: Dataset[Any],
    config: Mapping[str, Any] | None = None,
    *,
    on_round: RoundHook | None = None,
    overwrite: bool = False,
) -> RunResult:
    """Federate ``model`` over ``train`` split into clients; evaluate on ``test``.

    ``config`` takes the same keys as a YAML file, nested or dotted
    (``{"clients.num": 20}`` or ``{"clients": {"num": 20}}``). The model is trained
    from its current weights, or from ``model.checkpoint``'s if that is set (loaded into
    ``model`` with the same checks as a zoo model). ``model.name`` is recorded as
    ``custom`` unless given, and ``data.name`` always as ``custom``: the data are yours.
    A non-empty ``output_dir`` is refused unless ``overwrite`` (which clears it first).
    """
    defaults = {"model.name": "custom", "data.name": CUSTOM_DATA}
    cfg = load_config(None, base=nest({**defaults, **(config or {})}))
    if cfg.data.name != CUSTOM_DATA:
        raise ConfigError(
            [
                f"data.name: federate() uses the datasets you pass and records them as "
                f"{CUSTOM_DATA!r}; leave data.name unset (got {cfg.data.name!r})"
            ]
        )
    data = federate_tensors(
        from_torch_dataset(train), from_torch_dataset(test), cfg.clients.num, cfg.data, cfg.seed
    )
    return Experiment(cfg, model=model, data=data).run(on_round=on_round, overwrite=overwrite)
