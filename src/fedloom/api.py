"""The Python API: federate your own model and dataset in a few lines.

result = fedloom.federate(MyNet(), train_set, test_set, {"clients.num": 20, "rounds": 10})
result = fedloom.federate(MyNet(), test=test_set, client_data={"site-a": a, "site-b": b})
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from fedloom.client.task import Metric
from fedloom.client.trainer import Augment, Loss, OptimizerFactory, TrainStep
from fedloom.config import load_config, nest
from fedloom.core.errors import ConfigError
from fedloom.data.base import FederatedDataset, from_torch_dataset
from fedloom.data.config import CUSTOM_DATA
from fedloom.data.federated import federate_tensors, natural_split
from fedloom.experiment import Experiment, RoundHook, RunResult
from fedloom.parts import UserCode
from fedloom.report.progress import round_lines


def federate(
    model: nn.Module,
    train: Dataset[Any] | None = None,
    test: Dataset[Any] | None = None,
    config: Mapping[str, Any] | None = None,
    *,
    client_data: Mapping[str, Dataset[Any]] | None = None,
    loss: Loss | None = None,
    optimizer: OptimizerFactory | None = None,
    train_step: TrainStep | None = None,
    metrics: Mapping[str, Metric] | None = None,
    augment: Augment | None = None,
    on_round: RoundHook | None = None,
    overwrite: bool = False,
    verbose: bool = True,
) -> RunResult:
    """Federate ``model`` over ``train`` split into clients, or over ``client_data`` (one
    dataset per client, the natural split); evaluate on ``test``.

    ``config`` takes the same keys as a YAML file, nested or dotted (``{"clients.num":
    20}`` or ``{"clients": {"num": 20}}``); ``task.name`` picks classification (default),
    regression or language_model. The optional callables replace the task's defaults:
    ``loss(output, target) -> scalar`` (a mean over the batch), ``optimizer(params) ->
    Optimizer``, ``train_step(model, (x, y)) -> loss``, ``metrics={name: fn(output,
    target) -> float}`` (batch means, reported as ``test_<name>``), ``augment(x, generator)
    -> x`` (a random transform of each training batch, drawing only from ``generator``,
    which is seeded per client and round). A run that used them
    records their names in ``task.custom``; ``fedloom.resume(run_dir, loss=..., ...)``
    takes them again.

    ``model`` is never changed: the run trains a copy, returned as ``result.model``. It
    starts from ``model``'s weights, or from ``model.checkpoint``'s if that is set.
    With ``client_data``, client k is the k-th dataset in its order (``clients.num`` is
    its length). ``model.name`` is recorded as ``custom`` unless given, and ``data.name`` always as
    ``custom``: the data are yours. A non-empty ``output_dir`` is refused unless
    ``overwrite`` (which clears it first). ``verbose`` prints a line per round on stderr
    (at most every ``progress.every_s`` seconds).
    """
    if (train is None) == (client_data is None):
        raise ConfigError(["federate() needs exactly one of train= and client_data="])
    if test is None:
        raise ConfigError(["federate() needs a test= dataset to evaluate the global model on"])
    code = UserCode(loss, optimizer, train_step, metrics, augment)
    defaults: dict[str, Any] = {"model.name": "custom", "data.name": CUSTOM_DATA}
    given = nest({**defaults, **(config or {})})
    if client_data is not None:  # every site each round, unless the config says otherwise
        clients = given.setdefault("clients", {})
        clients.setdefault("num", len(client_data))
        if "fraction" not in clients:
            clients.setdefault("per_round", len(client_data))
    cfg = load_config(None, base={**given, "task": {**given.get("task", {}), "custom": code.names}})
    if cfg.data.name != CUSTOM_DATA:
        raise ConfigError(
            [
                f"data.name: federate() uses the datasets you pass and records them as "
                f"{CUSTOM_DATA!r}; leave data.name unset (got {cfg.data.name!r})"
            ]
        )
    tokens = cfg.task.name == "language_model"
    held_out = from_torch_dataset(test, token_inputs=tokens)
    data: FederatedDataset
    if client_data is not None:
        if cfg.clients.num != len(client_data):
            raise ConfigError(
                [f"clients.num is {cfg.clients.num} but client_data holds {len(client_data)}"]
            )
        sites = [from_torch_dataset(ds, token_inputs=tokens) for ds in client_data.values()]
        data = natural_split(sites, held_out)
    else:
        assert train is not None
        data = federate_tensors(
            from_torch_dataset(train, token_inputs=tokens),
            held_out,
            cfg.clients.num,
            cfg.data,
            cfg.seed,
        )
    own = copy.deepcopy(model)  # the user's object is left as it was
    experiment = Experiment(cfg, model=own, data=data, code=code)
    hooks = [h for h in (on_round,) if h is not None]
    if verbose:
        main = experiment.parts.task.main
        hooks.append(round_lines(cfg.rounds, main, cfg.progress.every_s))

    def each_round(metrics: dict[str, Any]) -> None:
        for hook in hooks:
            hook(metrics)

    return experiment.run(on_round=each_round, overwrite=overwrite)
