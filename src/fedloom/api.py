"""The Python API: federate your own model and dataset in a few lines.

result = fedloom.federate(MyNet(), train_set, test_set, {"clients.num": 20, "rounds": 10})
result = fedloom.federate(MyNet(), test=test_set, client_data={"site-a": a, "site-b": b})

A ``TensorDataset`` is held in memory (the fast path); any other ``Dataset`` (or a
Hugging Face ``datasets.Dataset``) stays a Dataset that clients read lazily.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from fedloom.client.task import Metric
from fedloom.client.trainer import Augment, Loss, OptimizerFactory, TrainStep
from fedloom.config import FedConfig, load_config, nest
from fedloom.core.errors import ConfigError
from fedloom.core.registry import REGISTRY
from fedloom.data.base import FederatedDataset, Split, as_split
from fedloom.data.config import CUSTOM_DATA, DataConfig
from fedloom.data.federated import federate_tensors, natural_split
from fedloom.data.hf import HFItems, is_hf_dataset
from fedloom.data.views import Collate, LazyData, LoaderSettings
from fedloom.experiment import Experiment, RoundHook, RunResult
from fedloom.parts import UserCode
from fedloom.report.progress import quiet, round_progress


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
    collate: Collate | None = None,
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
    which is seeded per client and round).

    Data: a ``TensorDataset`` is held in memory and indexed by tensor (the fast path).
    Any other map-style ``Dataset`` stays a Dataset: each client reads only its own
    items, when a batch needs them (``data.workers`` DataLoader processes,
    ``data.pin_memory``), so transforms in ``__getitem__`` run on every access. Items
    are ``(x, y)`` pairs or dicts whose target is ``data.target_key`` (default
    ``labels``; the other entries are passed as ``model(**inputs)``), merged by
    ``collate(items) -> batch`` (default: torch's ``default_collate``; for
    variable-length sequences ``fedloom.data.views.pad_collate()``). A Hugging Face
    ``datasets.Dataset`` is read through ``fedloom.data.hf.HFItems`` with its
    ``data.target_key`` column as the target. A run that used callables
    records their names in ``task.custom``; ``fedloom.resume(run_dir, loss=..., ...)``
    takes them again.

    ``model`` is never changed: the run trains a copy, returned as ``result.model``. It
    starts from ``model``'s weights, or from ``model.checkpoint``'s if that is set.
    With ``client_data``, client k is the k-th dataset in its order (``clients.num`` is
    its length). ``model.name`` is recorded as ``custom`` unless given, and ``data.name`` always as
    ``custom``: the data are yours. A non-empty ``output_dir`` is refused unless
    ``overwrite`` (which clears it first). ``verbose`` shows progress on stderr as the
    command line does: a live bar in a terminal or a notebook, else a line per round (at
    most every ``progress.every_s`` seconds) and one per long phase.
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

    def split(ds: Dataset[Any]) -> Split:
        return _split(ds, cfg.data, collate, tokens)

    held_out = split(test)
    data: FederatedDataset
    if client_data is not None:
        if cfg.clients.num != len(client_data):
            raise ConfigError(
                [f"clients.num is {cfg.clients.num} but client_data holds {len(client_data)}"]
            )
        data = natural_split([split(ds) for ds in client_data.values()], held_out)
    else:
        assert train is not None
        data = federate_tensors(split(train), held_out, cfg.clients.num, cfg.data, cfg.seed)
    if isinstance(data.train, LazyData):
        _check_lazy(cfg)
    own = copy.deepcopy(model)  # the user's object is left as it was
    with quiet(not verbose):
        experiment = Experiment(cfg, model=own, data=data, code=code)
        main = experiment.parts.task.main
        with round_progress(cfg.rounds, 0, main, cfg.progress.every_s) as show:

            def each_round(metrics: dict[str, Any]) -> None:
                if on_round is not None:
                    on_round(metrics)
                show(metrics)

            return experiment.run(on_round=each_round, overwrite=overwrite)


def _split(ds: Any, cfg: DataConfig, collate: Collate | None, tokens: bool) -> Split:
    """A dataset the user passed, as one split (a Hugging Face dataset through HFItems)."""
    settings = LoaderSettings(collate, cfg.target_key, cfg.workers, cfg.pin_memory)
    if is_hf_dataset(ds):
        ds = HFItems(ds, target=cfg.target_key)
    return as_split(ds, token_inputs=tokens, settings=settings)


def _check_lazy(cfg: FedConfig) -> None:
    """Refuse the features that read the clients' inputs as one in-memory tensor."""
    problems = []
    why = "needs the clients' inputs in memory, but the train data is a lazily read Dataset"
    if cfg.finetune.mode == "importance" and cfg.finetune.importance_source == "clients":
        problems.append(
            f"finetune.importance_source=clients {why} (data.name=custom); use "
            "finetune.importance_source=weights or pass a TensorDataset"
        )
    kind = cfg.attack.kind
    if kind != "none" and "data" in REGISTRY.component("attack", kind, "attack.kind").capabilities:
        problems.append(f"attack.kind={kind} {why} (data.name=custom); pass a TensorDataset")
    if problems:
        raise ConfigError(problems)
