"""The pieces of one federation, before they are wired together.

``Experiment`` fills a ``Parts`` with the plain defaults (FedAvg, uniform sampling,
lossless codecs, SGD clients) and then hands it to each feature in ``fedloom.features``
in turn. A feature (privacy, compression, fine-tuning, robust aggregation, ...) adjusts
the parts it cares about: it wraps the strategy, appends an update hook, swaps a codec
or the sampler, adds a metric source, a guard, or a checkpointed component. The round
loop itself never learns which features are on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn

from fedloom.client.client import UpdateHook
from fedloom.client.trainer import LocalTrainer
from fedloom.compression.codec import Codec, RawCodec
from fedloom.config import FedConfig
from fedloom.core.tensors import Tensors
from fedloom.data.base import FederatedDataset, TensorData
from fedloom.server.sampler import Sampler, UniformSampler
from fedloom.server.server import MetricSource, RoundGuard
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
    sampler: Sampler
    strategy: Strategy
    down: Codec = field(default_factory=RawCodec)
    up: Codec = field(default_factory=RawCodec)
    trainable: Callable[[str], bool] = lambda name: True
    """Which named tensors are trained, sent and aggregated; the rest stay frozen."""
    client_data: Callable[[int], TensorData] | None = None
    """Client k's local data; defaults to the partition of ``data``."""
    client_hooks: list[UpdateHook] = field(default_factory=list)
    guards: list[RoundGuard] = field(default_factory=list)
    metric_sources: list[MetricSource] = field(default_factory=list)
    stateful: dict[str, Stateful] = field(default_factory=dict)
    transport: Callable[[Mapping[str, Handler]], Transport] = InProcessTransport
    notes: dict[str, Any] = field(default_factory=dict)
    """Facts a feature reports for summary.json (e.g. the calibrated noise multiplier)."""
    export: Callable[[nn.Module], Tensors] | None = None
    """What the run saves as model.safetensors (default: the final global state)."""


def default_parts(config: FedConfig, data: FederatedDataset, model: nn.Module) -> Parts:
    return Parts(
        config=config,
        data=data,
        model=model,
        trainer=LocalTrainer(config.train),
        sampler=UniformSampler(config.clients.num, config.clients.per_round, config.seed),
        strategy=build_strategy(config.strategy),
    )
