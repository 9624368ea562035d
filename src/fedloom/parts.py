"""The pieces of one federation, before they are wired together.

``Experiment`` fills a ``Parts`` with the plain defaults (FedAvg, uniform sampling,
lossless codecs, SGD clients) and then hands it to each feature in ``fedloom.features``
in turn. A feature (privacy, compression, fine-tuning, robust aggregation, ...) adjusts
the parts it cares about: it wraps the strategy, adds an update transform, swaps a codec
or the sampler, adds a metric source, a guard, or a checkpointed component. The round
loop itself never learns which features are on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from fedloom.client.client import Client
from fedloom.client.context import UpdateHook
from fedloom.client.federated_eval import ClientEvaluator
from fedloom.client.task import Metric, Task
from fedloom.client.trainer import Augment, LocalTrainer, Loss, OptimizerFactory, TrainStep
from fedloom.client.transforms import Transform
from fedloom.compression.codec import Codec, RawCodec
from fedloom.config import FedConfig
from fedloom.core.registry import REGISTRY
from fedloom.core.tensors import Tensors
from fedloom.data.base import FederatedDataset, Split
from fedloom.server.sampler import Sampler, UniformSampler
from fedloom.server.server import (
    Instructions,
    MetricSource,
    ReplyObserver,
    RoundGuard,
    RoundPhase,
)
from fedloom.server.strategy import Strategy, build_strategy
from fedloom.transport.base import Transport
from fedloom.transport.inprocess import Handler, InProcessTransport


class Stateful(Protocol):
    """A component whose JSON-safe state goes into the checkpoint (e.g. an accountant)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class Parts:
    config: FedConfig
    data: FederatedDataset
    model: nn.Module
    """The global model; its weights are the starting point of the federation."""
    trainer: LocalTrainer
    task: Task
    """What is learned: the loss clients train on, the metrics the server evaluates."""
    sampler: Sampler
    strategy: Strategy
    down: Codec = field(default_factory=RawCodec)
    up: Codec = field(default_factory=RawCodec)
    trainable: Callable[[str], bool] = lambda name: True
    """Which named tensors are trained, sent and aggregated; the rest stay frozen."""
    client_data: Callable[[int], Split] | None = None
    """Client k's local data; defaults to the partition of ``data``."""
    client_holdout: Callable[[int], Split] | None = None
    """Client k's held-out data for federated evaluation (``eval.client_fraction``)."""
    client_evaluator: ClientEvaluator | None = None
    transforms: list[Transform] = field(default_factory=list)
    """Update transforms, ordered by their own constraints (``client.transforms``)."""
    guards: list[RoundGuard] = field(default_factory=list)
    metric_sources: list[MetricSource] = field(default_factory=list)
    instructions: list[Instructions] = field(default_factory=list)
    observers: list[ReplyObserver] = field(default_factory=list)
    stateful: dict[str, Stateful] = field(default_factory=dict)
    transport: Callable[[Mapping[str, Handler]], Transport] = InProcessTransport
    phase: RoundPhase | None = None
    """Runs each round's exchanges instead of the plain fit exchange (secure aggregation)."""
    client_handler: Callable[[Handler, str], Handler] | None = None
    """Wraps client ``cid``'s handler so it answers the round phase's own messages (a
    secure round's stages), in the simulation and in a networked client process alike."""
    stage_reply_bytes: int = 0
    """Largest reply to the round phase's own messages (a masked input), which the gRPC
    feature reads besides the largest update."""
    notes: dict[str, Any] = field(default_factory=dict)
    """Facts a feature reports for summary.json (e.g. the calibrated noise multiplier)."""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    """Where the clients train and the server evaluates (``compute.device``)."""
    min_updates: int = 1
    """Fewest valid updates a round needs to change the model (networked ``min_clients``)."""
    max_update_bytes: int = 2**31
    """Largest update payload the server reads (the gRPC feature bounds it by the codec)."""
    finish: Callable[[nn.Module], nn.Module] | None = None
    """The model a run returns, made from the trained one (e.g. LoRA merged); None: it."""
    export: Callable[[nn.Module], Tensors] | None = None
    """What the run saves as model.safetensors (default: the final global state)."""
    make_client: Callable[..., Client] | None = None
    """Builds each client from what ``build_clients`` passes ``Client`` (None: ``Client``);
    a heterogeneous federation gives each client its own architecture's model here."""
    initial_state: Tensors | None = None
    """The server's starting state when it is not the model's weights (FedMD: the
    consensus class scores); None: the model's trainable tensors."""
    evaluate: Callable[[Tensors], dict[str, float]] | None = None
    """The server's metrics of its state when that is not the model (None: the model's
    test metrics)."""

    def add_transform(
        self,
        name: str,
        apply: UpdateHook,
        *,
        after: Sequence[str] = (),
        before: Sequence[str] = (),
    ) -> None:
        """Transform each client's update with ``apply`` after training, after the
        transforms named in ``after`` and before those in ``before``."""
        self.transforms.append(Transform(name, apply, tuple(after), tuple(before)))


@dataclass(frozen=True)
class UserCode:
    """Callables a user passes to ``fedloom.federate`` (none: the task's defaults)."""

    loss: Loss | None = None
    optimizer: OptimizerFactory | None = None
    train_step: TrainStep | None = None
    metrics: Mapping[str, Metric] | None = None
    augment: Augment | None = None

    @property
    def names(self) -> list[str]:
        """Which were given, as recorded in ``task.custom``."""
        given = ("loss", "optimizer", "train_step", "metrics", "augment")
        return [name for name in given if getattr(self, name) is not None]


NO_CODE = UserCode()


def default_parts(
    config: FedConfig, data: FederatedDataset, model: nn.Module, code: UserCode = NO_CODE
) -> Parts:
    task = REGISTRY.component("task", config.task.name, "task.name").load()()
    task = task.with_overrides(code.loss, code.metrics)
    factory = REGISTRY.component("trainer", config.train.trainer, "train.trainer").load()
    trainer = factory(config.train, task.objective)
    trainer.make_optimizer = code.optimizer or trainer.make_optimizer
    trainer.train_step = code.train_step or trainer.train_step
    trainer.augment = code.augment or trainer.augment
    return Parts(
        config=config,
        data=data,
        model=model,
        trainer=trainer,
        task=task,
        sampler=UniformSampler(config.clients.num, config.clients.per_round, config.seed),
        strategy=build_strategy(config.strategy),
    )
