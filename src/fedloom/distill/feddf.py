"""FedDF (Lin et al. 2020): average within each architecture, then distil the ensemble of
the round's client models into every architecture's model on unlabeled data.

The ensemble's class scores are accumulated as the updates arrive (each client model is
rebuilt from its architecture's weights and its update, scored on the distillation
inputs, and dropped), so the server holds O(models + inputs x classes), never every
client model of the round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from fedloom.client.client import load_into
from fedloom.client.evaluate import evaluate_task
from fedloom.core.seeding import derive_seed, generator
from fedloom.core.tensors import Tensors, clone
from fedloom.distill.clients import ArchClient
from fedloom.distill.ensemble import (
    ADAM,
    Distilled,
    agreement,
    classes_predicted,
    distill_into,
    logits_of,
    state_after,
    teacher_of,
    update_step_sizes,
)
from fedloom.distill.setup import client_maker, parameter_counts
from fedloom.distill.strategy import DistillStrategy
from fedloom.server.aggregate import WeightedSum
from fedloom.server.config import StrategyConfig
from fedloom.server.strategy import Aggregator

log = logging.getLogger(__name__)

TEACHER = "#ensemble"
"""The aggregate's entry holding the ensemble's mean class scores (no model has it)."""
SEP = "/"
"""Between an architecture and a tensor name in the aggregate and the checkpoint."""


class EnsembleAggregator:
    """Per architecture, the sample-weighted mean update; over all, the mean class scores
    of the client models on the distillation inputs."""

    def __init__(
        self,
        arch_of: Callable[[str], str],
        states: Mapping[str, Tensors],
        nets: Mapping[str, nn.Module],
        inputs: Tensor,
    ) -> None:
        self.arch_of, self.states, self.nets, self.inputs = arch_of, states, nets, inputs
        self.means = {arch: WeightedSum() for arch in states}
        self.scores = torch.zeros(0)
        self.scored = 0
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def add(self, client_id: str, update: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
        arch = self.arch_of(client_id)
        self.means[arch].add(update, float(meta["num_examples"]))
        self._count += 1
        base = self.states[arch]
        net = self.nets[arch]
        load_into(net, {n: base[n] + t for n, t in update.items()})
        scores = logits_of(net, self.inputs)
        if not bool(torch.isfinite(scores).all()):  # a finite update can still overflow
            log.warning(
                "client %s: its model's class scores are not finite; not a teacher", client_id
            )
            return
        self.scores = scores if not self.scored else self.scores + scores
        self.scored += 1

    def result(self) -> Tensors:
        out = {
            f"{arch}{SEP}{name}": t
            for arch, total in self.means.items()
            if total.count
            for name, t in total.mean().items()
        }
        if self.scored:
            out[TEACHER] = self.scores / self.scored
        return out


class FedDF(DistillStrategy):
    """``strategy.name=feddf``; the server's global state is the first architecture's."""

    recorded = ("teacher", "teacher_std", "guard")

    def __init__(self, config: StrategyConfig, params: Any = None) -> None:
        super().__init__("feddf", config)
        self.server_lr = config.server_lr
        self.states: dict[str, Tensors] = {}
        self.round = 0
        self.last: dict[str, dict[str, Any]] = {}
        """This round's distillation of each architecture: steps, whether the guard
        skipped it, classes the teacher and the average predict, agreement before, after."""

    def prepare(self, parts: Any) -> None:
        fed = self.fed
        parts.make_client = client_maker(parts, fed, ArchClient, lambda arch: {})
        parts.metric_sources.append(self.metrics)
        parts.notes["models"] = parameter_counts(fed)
        parts.notes["clients_per_model"] = {a: fed.assignment.count(a) for a in fed.archs}

    def start(self, global_state: Mapping[str, Tensor]) -> None:
        self.states = {arch: clone(state) for arch, state in self.fed.initial.items()}
        self.states[self.fed.primary] = dict(global_state)

    def views(self, global_state: Mapping[str, Tensor]) -> dict[str, Tensors]:
        states = self.states or self.fed.initial
        return {**states, self.fed.primary: dict(global_state)}

    def new_aggregator(self, rnd: int) -> Aggregator:
        self.round, self.last = rnd, {}
        fed = self.fed
        return EnsembleAggregator(fed.arch_of, dict(self.states), fed.nets, fed.unlabeled.inputs)

    def apply(self, global_state: Mapping[str, Tensor], aggregate: Mapping[str, Tensor]) -> Tensors:
        fed = self.fed
        self.states[fed.primary] = dict(global_state)
        mean = aggregate.get(TEACHER)
        teacher = None if mean is None else teacher_of(mean, fed.config)
        if mean is not None and teacher is None:
            log.warning("round %d: the teacher's class scores overflow; not distilled", self.round)
        for arch in fed.archs:
            base = self.states[arch]
            prefix = f"{arch}{SEP}"
            state = {
                n: t + self.server_lr * aggregate[prefix + n] if prefix + n in aggregate else t
                for n, t in base.items()
            }
            if teacher is not None:
                update = {
                    n: self.server_lr * aggregate[prefix + n]
                    for n in base
                    if prefix + n in aggregate
                }
                state = self._distill(arch, state, teacher, update)
            self.states[arch] = state
        return self.states[fed.primary]

    def _distill(self, arch: str, state: Tensors, teacher: Tensor, update: Tensors) -> Tensors:
        """``state`` distilled towards ``teacher``; with Adam and ``distill.step_scale``,
        each tensor's step size follows its share of the round's ``update`` (none: an
        architecture no client trained this round keeps its averaged weights). With
        ``distill.guard=classes``, a teacher that predicts fewer classes on the
        distillation inputs than ``state`` does leaves ``state`` as it is."""
        fed = self.fed
        cfg = fed.config
        net = fed.nets[arch]
        load_into(net, state)
        start = logits_of(net, fed.unlabeled.inputs)
        taught, known = classes_predicted(teacher), classes_predicted(start)
        skipped = cfg.guard == "classes" and taught < known
        if skipped:
            why = "the teacher predicts %d classes, the average %d: not distilled"
            log.info("round %d, %s: " + why, self.round, arch, taught, known)
            held = len(fed.unlabeled.fit)
            agrees = agreement(start[held:], teacher[held:])
            done = Distilled(0, agrees, agrees)
        else:
            sizes = None
            if cfg.optimizer == ADAM and cfg.step_scale is not None:
                sizes = update_step_sizes(update, cfg.step_scale)
            with torch.random.fork_rng(devices=[]):  # dropout, seeded per round and model
                torch.manual_seed(derive_seed(fed.seed, "distill", self.round, arch))
                gen = generator(fed.seed, "distill-order", self.round, arch)
                done = distill_into(net, fed.unlabeled, teacher, cfg, gen, step_sizes=sizes)
        self.last[arch] = {
            "steps": done.steps,
            "skipped": skipped,
            "teacher_classes": taught,
            "average_classes": known,
            "agreement_before": done.before,
            "agreement_after": done.after,
        }
        return state_after(net, state)

    def metrics(self, rnd: int) -> dict[str, Any]:
        """Each architecture's test accuracy, and this round's distillation."""
        fed = self.fed
        if not fed.evaluated(rnd):
            return {"test_accuracy_by_model": None, "distill": dict(self.last)}
        accuracy = {}
        for arch in fed.archs:
            load_into(fed.nets[arch], self.states[arch])
            accuracy[arch] = evaluate_task(fed.nets[arch], fed.test, fed.task)["accuracy"]
        return {"test_accuracy_by_model": accuracy, "distill": dict(self.last)}

    def state_dict(self) -> tuple[Tensors, dict[str, Any]]:
        tensors = {  # copies: the first architecture's tensors are also the global state
            f"{a}{SEP}{n}": t.clone() for a, state in self.states.items() for n, t in state.items()
        }
        return tensors, {"round": self.round, **self.settings()}

    def load_state_dict(self, tensors: Mapping[str, Tensor], rest: Mapping[str, Any]) -> None:
        self.check_settings(rest)
        states: dict[str, Tensors] = {arch: {} for arch in self.fed.archs}
        for key, t in tensors.items():
            arch, _, name = key.partition(SEP)
            states[arch][name] = t
        for arch, state in states.items():
            if set(state) != set(self.fed.initial[arch]):
                raise ValueError(f"the checkpoint's {arch} weights do not fit this run")
        self.states = states
        self.round = int(rest["round"])
