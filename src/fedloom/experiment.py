"""Assembly: turn a ``FedConfig`` (and optionally a user's model and data) into a run.

This is the only place that knows every component. The server, the clients and the
transport are built here and then run by the same loop whatever the transport.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from fedloom.client.client import Client, load_into
from fedloom.client.evaluate import evaluate_task
from fedloom.client.store import CLIENTS_DIR, ClientStateStore, load_legacy_states
from fedloom.client.task import Metric
from fedloom.client.trainer import Augment, Loss, OptimizerFactory, TrainStep
from fedloom.client.transforms import hooks_of, order_transforms
from fedloom.config import FedConfig, load_config, to_yaml
from fedloom.core.clientref import naming_clients
from fedloom.core.device import resolve_device
from fedloom.core.errors import ConfigError, DataError, FedloomError
from fedloom.core.heap import frozen_heap
from fedloom.core.seeding import derive_seed
from fedloom.core.tensors import Tensors, clone, state_of
from fedloom.data.base import FederatedDataset, Split
from fedloom.data.federated import load_federated
from fedloom.data.ondemand import OnDemandFederatedDataset
from fedloom.features import FEATURES
from fedloom.models.fit import check_model_fits
from fedloom.models.pretrained import load_pretrained
from fedloom.models.registry import build_model
from fedloom.parts import NO_CODE, Parts, UserCode, default_parts
from fedloom.privacy.plots import plot_privacy
from fedloom.report.metrics import MetricsLog, read_metrics
from fedloom.report.plots import plot_metrics, plot_partition, write_partition_table
from fedloom.report.progress import phase
from fedloom.report.tracking import Tracking
from fedloom.robust.weighting import run_weighting
from fedloom.rundir import (
    RESUMABLE,
    allowed_changes,
    claim_run_dir,
    config_inputs,
    record_resume,
)
from fedloom.server.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fedloom.server.checkpoint_writer import CheckpointWriter
from fedloom.server.server import Server
from fedloom.server.validate import UpdateSpec
from fedloom.simulation.pool import (
    ClientPool,
    Clients,
    handlers_of,
    load_states,
    stage_states,
    use_pool,
)

RoundHook = Callable[[dict[str, Any]], None]


@dataclass
class RunResult:
    run_dir: Path
    model: nn.Module
    """The model holding the final global weights."""
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]


def _new_run_dir(config: FedConfig) -> Path:
    if config.output_dir:
        return Path(config.output_dir)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{config.data.name}-{config.model.name}-{stamp}"
    path, k = base, 1
    while path.exists():
        path, k = base.with_name(f"{base.name}-{k}"), k + 1
    return path


def assemble(
    config: FedConfig,
    *,
    model: nn.Module | None = None,
    data: FederatedDataset | None = None,
    code: UserCode = NO_CODE,
) -> Parts:
    """The one assembly pass: load the data, build (or take) the model, check that they
    fit, then let every feature adjust the ``Parts``. Nothing is changed afterwards."""
    problems = config.compatibility_problems()  # load_config checked them; a config
    if problems:  # built in code may not have been
        raise ConfigError(problems)
    if sorted(code.names) != sorted(config.task.custom):
        missing = sorted(set(config.task.custom) - set(code.names))
        raise ConfigError(
            [
                f"task.custom: this run used the custom {', '.join(config.task.custom)} "
                f"passed to fedloom.federate, which config.yaml cannot hold; pass "
                f"{', '.join(missing) or 'the same ones'} again: "
                f"fedloom.resume(run_dir, {', '.join(f'{m}=...' for m in missing)})"
            ]
        )
    if data is None:
        with phase("loading data"):
            data = load_federated(config.data, config.clients.num, config.seed)
    if len(data.client_indices) != config.clients.num:
        raise ConfigError(
            [
                f"clients.num is {config.clients.num} but the data has "
                f"{len(data.client_indices)} client partitions"
            ]
        )
    if (
        config.task.name == "classification"
        and data.train.targets_known
        and not data.train.has_labels
    ):
        raise DataError(
            f"task.name=classification needs int64 class labels of shape (N,), but the "
            f"targets are {data.train.y.dtype} of shape {tuple(data.train.y.shape)}: call "
            "y.long(), or set task.name=regression"
        )
    model = _built_model(config, data) if model is None else model
    if config.model.checkpoint:
        load_pretrained(model, config.model.checkpoint)
    example = (data.train if len(data.train) else data.test).example()
    check_model_fits(
        model,
        example,
        data.num_classes
        if config.task.name == "classification" and data.train.targets_known
        else None,
        model_name=config.model.name,
        data_name=config.data.name,
    )
    if config.compute.threads is not None:
        torch.set_num_threads(config.compute.threads)
    parts = default_parts(config, data, model, code)
    for feature in FEATURES:
        feature(parts)
    parts.device = resolve_device(config.compute.device)
    parts.model.to(parts.device)
    return parts


@contextmanager
def _client_log(path: Path) -> Iterator[None]:
    """Simulated clients' failures, with their tracebacks, in ``clients.log`` (the screen
    gets one line each)."""
    handler = logging.FileHandler(path, delay=True)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    traces = logging.getLogger("fedloom.clients")
    propagate = traces.propagate
    traces.addHandler(handler)
    traces.propagate = False  # the screen has the one-line warning already
    try:
        yield
    finally:
        traces.removeHandler(handler)
        traces.propagate = propagate
        handler.close()


def _title(config: FedConfig) -> str:
    """The key config in one line, for the plots."""
    privacy = config.privacy.mode
    return (
        f"{config.data.name} · {config.model.name} · {config.strategy.name} · "
        f"{config.clients.per_round}/{config.clients.num} clients · privacy {privacy} · "
        f"up {config.compression.up}"
    )


def _built_model(config: FedConfig, data: FederatedDataset) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.seed, "init"))
        return build_model(
            config.model.name, data.input_shape, data.num_classes, data_name=config.data.name
        )


def build_clients(
    parts: Parts, ids: Sequence[str], workspace: nn.Module | None = None
) -> dict[str, Client]:
    """The clients ``ids`` of the federation ``parts`` describes, each with its own data;
    they share one working copy of the model, ``workspace`` (by default a new one): they
    train one at a time."""
    workspace = copy.deepcopy(parts.model) if workspace is None else workspace
    own = parts.client_data or parts.data.client
    held = parts.client_holdout

    def client_data(k: int) -> Split:  # moved once, not every step
        return own(k).to(parts.device)

    def holdout(k: int) -> Split:
        assert held is not None
        return held(k).to(parts.device)

    hooks = hooks_of(order_transforms(parts.transforms))
    make = parts.make_client or Client
    return {
        cid: make(
            cid,
            client_data(int(cid)),
            workspace,
            parts.trainer,
            seed=parts.config.seed,
            down=parts.down,
            up=parts.up,
            hooks=hooks,
            holdout=None if held is None else holdout(int(cid)),
            evaluator=parts.client_evaluator,
        )
        for cid in ids
    }


class Experiment:
    """A run: the server and, in simulation, every client, over one ``Parts``.

    Each role assembles only what it runs: with ``network.mode=grpc`` this process is the
    server (model, test set, strategy; no client objects), and ``fedloom client`` builds
    one client with ``build_clients``."""

    def __init__(
        self,
        config: FedConfig,
        *,
        model: nn.Module | None = None,
        data: FederatedDataset | None = None,
        code: UserCode = NO_CODE,
    ) -> None:
        self.run_dir = _new_run_dir(config)
        self.config = config.model_copy(update={"output_dir": str(self.run_dir)})
        self.parts = assemble(self.config, model=model, data=data, code=code)
        self.channels_last = model is None
        """Evaluate a convolutional model channels-last: only a built-in one is known to
        allow it (a user's model may flatten with ``.view``)."""
        self.data, self.model = self.parts.data, self.parts.model
        self.inputs = config_inputs(self.config)
        """Files the run reads; a fresh run may share its run directory with these."""
        self.run_dir_ready = False
        """Set once the run directory was checked (e.g. by ``fedloom server``)."""
        self.stateful = self.parts.stateful
        ids = [str(k) for k in range(config.clients.num)]
        simulated = config.network.mode == "simulation"
        self.store = ClientStateStore(self.run_dir / CLIENTS_DIR, config.clients.num)
        """Every simulated client's state (``fedloom.client.store``)."""
        self.clients: Clients = self._build_clients(ids) if simulated else {}
        self.server = self._build_server(self.parts, ids)
        self.metrics_log = MetricsLog(self.run_dir / "metrics.jsonl")
        self.writer = CheckpointWriter(self.run_dir / "checkpoint", background=simulated)
        """Writes a simulation's checkpoints while the next round runs (``run`` waits)."""
        self.started = time.perf_counter()

    def _build_clients(self, ids: list[str]) -> Clients:
        """Every client now, or a pool that builds each one when it is sampled."""
        if not use_pool(self.config, self.data):
            return build_clients(self.parts, ids)
        workspace = copy.deepcopy(self.parts.model)
        make = lambda cid: build_clients(self.parts, [cid], workspace)[cid]  # noqa: E731
        return ClientPool(make, len(ids), self.store)

    def _build_server(self, parts: Parts, ids: list[str]) -> Server:
        # the server's state lives on the CPU, where decoded updates are aggregated
        state = parts.initial_state or {
            n: t.cpu() for n, t in state_of(parts.model).items() if parts.trainable(n)
        }
        global_state = clone(state)
        server = Server(
            global_state=global_state,
            client_ids=ids,
            strategy=parts.strategy,
            sampler=parts.sampler,
            transport=parts.transport(handlers_of(self.clients)),
            down=parts.down,
            up=parts.up,
            evaluate=parts.evaluate or self._evaluate,
            eval_every=parts.config.eval_every,
            weighting=run_weighting(parts),
            max_update_bytes=parts.max_update_bytes,
            min_updates=parts.min_updates,
            eval_keys=[f"test_{name}" for name in parts.task.reported],
            stop_on_divergence=parts.config.network.mode == "simulation",
        )
        server.guards.extend(parts.guards)
        server.metric_sources.extend(parts.metric_sources)
        server.instructions.extend(parts.instructions)
        server.observers.extend(parts.observers)
        server.phase = parts.phase
        return server

    def _evaluate(self, state: Tensors) -> dict[str, float]:
        """``test_<metric>`` of ``state`` on the test split, for the run's task."""
        load_into(self.model, state)
        values = evaluate_task(
            self.model, self.data.test, self.parts.task, channels_last=self.channels_last
        )
        return {f"test_{name}": value for name, value in values.items()}

    # -- run directory -------------------------------------------------------------------

    def _prepare_run_dir(self, overwrite: bool) -> None:
        if not self.run_dir_ready:
            claim_run_dir(self.run_dir, self.inputs, overwrite=overwrite)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(to_yaml(self.config))
        if self.config.privacy.withholds_client_info or not self.data.train.has_labels:
            return  # per-client label counts are outside epsilon; or there are no labels
        if isinstance(self.data, OnDemandFederatedDataset):  # setup, not the round loop
            return  # the table would build every client's data
        histogram = self.data.label_histogram()
        write_partition_table(histogram, self.run_dir / "partition.csv")
        plot_partition(histogram, self.run_dir / "partition.png")

    def _checkpoint(self, server: Server, metrics: dict[str, Any]) -> None:
        tensors, rest = server.strategy.state_dict()
        # client state is client-side data: its own store, never the server's checkpoint;
        # round r's journal is sealed before the checkpoint of r, committed after it
        stage_states(self.clients, self.store, server.round)
        self.store.seal(server.round)
        ckpt = Checkpoint(
            server.round,
            server.global_state,
            tensors,
            rest,
            {},
            extra={key: part.state_dict() for key, part in self.stateful.items()},
        )
        if self.store.layout is None:  # no client rows to commit after it: in the background
            self.writer.submit(ckpt)
            return
        self.writer.wait()
        save_checkpoint(self.run_dir / "checkpoint", ckpt)
        self.store.commit(server.round)

    def restore(self) -> int:
        """Load the run directory's checkpoint; returns the round it was taken after."""
        ckpt = load_checkpoint(self.run_dir / "checkpoint")
        expected = UpdateSpec.of(self.server.global_state, 0)
        if UpdateSpec.of(ckpt.global_state, 0) != expected:
            raise FedloomError(
                f"the checkpoint in {self.run_dir} does not hold this run's model "
                "(tensor names, shapes or dtypes differ)"
            )
        try:
            self.server.strategy.load_state_dict(ckpt.strategy_tensors, ckpt.strategy_rest)
            self.store.recover(ckpt.round)
            older = load_legacy_states(self.run_dir / CLIENTS_DIR, ckpt.round)
            self.store.adopt(ckpt.round, {**ckpt.client_states, **older})  # older layouts
            load_states(self.clients, self.store)
            for key, part in self.stateful.items():
                part.load_state_dict(ckpt.extra[key])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise FedloomError(
                f"the checkpoint in {self.run_dir} does not match this run: {error!r}"
            ) from None
        self.server.global_state = ckpt.global_state
        self.server.round = ckpt.round
        self.metrics_log.truncate_after(ckpt.round)
        return ckpt.round

    # -- running -------------------------------------------------------------------------

    def run(self, on_round: RoundHook | None = None, *, overwrite: bool = False) -> RunResult:
        """Run the remaining rounds. A fresh run refuses a non-empty run directory
        unless ``overwrite``, which clears it first (the config's own inputs are kept)."""
        with frozen_heap():  # the garbage collector skips what lives through the run
            return self._run(on_round, overwrite)

    def _run(self, on_round: RoundHook | None, overwrite: bool) -> RunResult:
        if self.server.round == 0:
            self._prepare_run_dir(overwrite)
        tracking = Tracking.start(self.run_dir, self.config, list(self.server.global_state))
        self.server.callbacks = [lambda s, m: self.metrics_log.append(m), self._checkpoint]
        tracking.watch(self.server)  # loggers, then the caller's hook
        if on_round is not None:  # it sees the round's checkpoint on disk
            self.server.callbacks.append(lambda s, m: self.writer.then(on_round, m))
        try:
            with (
                naming_clients(not self.config.privacy.withholds_client_info),
                _client_log(self.run_dir / "clients.log"),
            ):
                final = self.server.run(self.config.rounds)
            self.writer.close()
            result = self._save_results(final)
            tracking.finish(self.run_dir)
        finally:
            self.writer.close()
            tracking.close()
        return result

    def _save_results(self, final: Tensors) -> RunResult:
        """The final model, ``summary.json`` and the plots, into the run directory."""
        if self.parts.initial_state is None:  # else the state is not the model's weights
            load_into(self.model, final)
        exported = self.parts.export(self.model) if self.parts.export else final
        model_path = self.run_dir / "model.safetensors"
        save_file({n: t.contiguous().cpu() for n, t in exported.items()}, model_path)
        returned = self.parts.finish(self.model) if self.parts.finish else self.model
        metrics = read_metrics(self.metrics_log.path)
        summary = self._summary(metrics)
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        plot_metrics(
            metrics, self.run_dir, main=f"test_{self.parts.task.main}", title=_title(self.config)
        )
        plot_privacy(metrics, self.run_dir)  # nothing unless the run reported epsilon
        return RunResult(self.run_dir, returned, metrics, summary)

    def _summary(self, metrics: Sequence[dict[str, Any]]) -> dict[str, Any]:
        task = self.parts.task
        main = f"test_{task.main}"
        values = [m[main] for m in metrics if m.get(main) is not None]
        best = max if task.higher_is_better else min
        last = metrics[-1] if metrics else {}
        return {
            "rounds": len(metrics),
            "task": task.name,
            **{f"final_{key}": last.get(key) for key in self.server.eval_keys},
            f"best_{main}": best(values, default=None),
            "total_bytes_up": sum(m["bytes_up"] for m in metrics),
            "total_bytes_down": sum(m["bytes_down"] for m in metrics),
            "rounds_wall_s": sum(m["wall_s"] for m in metrics),
            "num_parameters": sum(t.numel() for t in self.server.global_state.values()),
            "stopped_early": self.server.stopped,
            **self.parts.notes,
            "run_dir": str(self.run_dir),
        }


def resume(
    run_dir: str | Path,
    overrides: Sequence[str] = (),
    *,
    model: nn.Module | None = None,
    data: FederatedDataset | None = None,
    config: FedConfig | None = None,
    allowed: frozenset[str] = RESUMABLE,
    loss: Loss | None = None,
    optimizer: OptimizerFactory | None = None,
    train_step: TrainStep | None = None,
    metrics: Mapping[str, Metric] | None = None,
    augment: Augment | None = None,
) -> Experiment:
    """An ``Experiment`` restored from ``run_dir``'s config and checkpoint, ready to ``run()``.

    The new config is the saved one with ``overrides`` (or ``config`` as given); a change
    outside ``allowed`` is a ``ConfigError``. Accepted changes go to ``resumes.jsonl``.
    A run that was given callables (``task.custom``) needs the same ones again: the
    command line cannot resume it.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise ConfigError([f"{run_dir} is not a run directory (no config.yaml)"])
    new = config if config is not None else load_config(config_path, overrides)
    new = new.model_copy(update={"output_dir": str(run_dir)})
    changes = allowed_changes(run_dir, new, allowed)
    code = UserCode(loss, optimizer, train_step, metrics, augment)
    experiment = Experiment(new, model=model, data=data, code=code)
    after = experiment.restore()
    if new.rounds < after:
        raise ConfigError([f"rounds={new.rounds}, but {run_dir} is already past round {after}"])
    record_resume(run_dir, after, changes, new)
    return experiment
