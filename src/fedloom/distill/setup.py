"""The heterogeneous federation a distillation strategy runs: every architecture's model,
which client trains which, and the unlabeled distillation data."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fedloom.client.client import Client
from fedloom.client.task import Task
from fedloom.core.errors import ConfigError
from fedloom.core.seeding import derive_seed
from fedloom.core.tensors import Tensors, clone, state_of
from fedloom.data.base import TensorData
from fedloom.distill.assign import architectures, assign_models
from fedloom.distill.clients import workspace
from fedloom.distill.config import DistillConfig
from fedloom.distill.data import Unlabeled, distillation_data
from fedloom.models.registry import build_model

if TYPE_CHECKING:
    from fedloom.parts import Parts


@dataclass
class Federation:
    """What a distillation strategy knows about the federation, fixed at assembly."""

    archs: list[str]
    """The architectures, in the order ``clients.models`` lists them."""
    assignment: list[str]
    """Client k's architecture at position k."""
    nets: dict[str, nn.Module]
    """The server's own model of each architecture (ensemble scores, distillation, tests)."""
    initial: dict[str, Tensors]
    """Each architecture's starting weights."""
    unlabeled: Unlabeled
    test: TensorData
    task: Task
    num_classes: int
    config: DistillConfig
    seed: int
    eval_every: int
    rounds: int

    @property
    def primary(self) -> str:
        """The first architecture: its accuracy is the run's ``test_accuracy``."""
        return self.archs[0]

    def arch_of(self, client_id: str) -> str:
        return self.assignment[int(client_id)]

    def evaluated(self, rnd: int) -> bool:
        """Whether round ``rnd`` is tested (``eval_every``, and always the last)."""
        return rnd % self.eval_every == 0 or rnd >= self.rounds


def _seeded_model(parts: Parts, arch: str) -> nn.Module:
    """Architecture ``arch`` initialised from the run's seed (as the run's own model is)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(parts.config.seed, "init", arch))
        return build_model(
            arch, parts.data.input_shape, parts.data.num_classes, data_name=parts.config.data.name
        )


def build_federation(parts: Parts) -> Federation:
    """The federation ``parts.config`` describes. It replaces ``parts.data`` by the
    clients' share (without the held-out distillation slice) and ``parts.model`` by the
    first architecture's model."""
    cfg = parts.config
    if not isinstance(parts.data.train, TensorData) or not isinstance(parts.data.test, TensorData):
        raise ConfigError(
            [f"strategy.name={cfg.strategy.name} needs data.name={cfg.data.name} in memory"]
        )
    archs = architectures(cfg.clients.models, cfg.model.name)
    models = {
        arch: parts.model if arch == cfg.model.name else _seeded_model(parts, arch)
        for arch in archs
    }
    parts.data, unlabeled = distillation_data(parts.data, cfg.data, cfg.distill, cfg.seed)
    parts.model = models[archs[0]]
    nets = {arch: copy.deepcopy(model).cpu() for arch, model in models.items()}
    test = parts.data.test
    assert isinstance(test, TensorData)
    return Federation(
        archs=archs,
        assignment=assign_models(cfg.clients.models, cfg.clients.num, cfg.model.name, cfg.seed),
        nets=nets,
        initial={arch: clone(state_of(net)) for arch, net in nets.items()},
        unlabeled=unlabeled,
        test=test,
        task=parts.task,
        num_classes=parts.data.num_classes,
        config=cfg.distill,
        seed=cfg.seed,
        eval_every=cfg.eval_every,
        rounds=cfg.rounds,
    )


ClientClass = Callable[..., Client]


def client_maker(
    parts: Parts, fed: Federation, cls: ClientClass, extra: Callable[[str], dict[str, Any]]
) -> Callable[..., Client]:
    """``parts.make_client`` for a heterogeneous federation: client ``cid`` is a ``cls``
    training its own architecture (one working copy per architecture, shared by that
    architecture's clients as the plain clients share theirs), with ``extra(arch)``."""
    copies: dict[str, nn.Module] = {}

    def make(cid: str, data: Any, model: nn.Module, *args: Any, **kwargs: Any) -> Client:
        arch = fed.arch_of(cid)
        if arch not in copies:
            copies[arch] = workspace(fed.nets[arch], parts.device)
        return cls(cid, data, copies[arch], *args, arch=arch, **extra(arch), **kwargs)

    return make


def parameter_counts(fed: Federation) -> dict[str, int]:
    return {arch: sum(t.numel() for t in fed.initial[arch].values()) for arch in fed.archs}
