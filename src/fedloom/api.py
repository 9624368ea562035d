"""The Python API: federate your own model and dataset in a few lines.

result = fedloom.federate(MyNet(), train_set, test_set, {"clients.num": 20, "rounds": 10})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from fedloom.config import load_config, nest
from fedloom.data import federate_tensors, from_torch_dataset
from fedloom.experiment import Experiment, RoundHook, RunResult


def federate(
    model: nn.Module,
    train: Dataset[Any],
    test: Dataset[Any],
    config: Mapping[str, Any] | None = None,
    *,
    on_round: RoundHook | None = None,
) -> RunResult:
    """Federate ``model`` over ``train`` split into clients; evaluate on ``test``.

    ``config`` takes the same keys as a YAML file, nested or dotted
    (``{"clients.num": 20}`` or ``{"clients": {"num": 20}}``). The model is trained
    from its current weights; ``model.name`` is recorded as ``custom``.
    """
    cfg = load_config(None, base=nest({"model.name": "custom", **(config or {})}))
    data = federate_tensors(
        from_torch_dataset(train), from_torch_dataset(test), cfg.clients.num, cfg.data, cfg.seed
    )
    return Experiment(cfg, model=model, data=data).run(on_round=on_round)
