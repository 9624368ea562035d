"""SCAFFOLD (Karimireddy et al. 2020): control variates that cancel client drift.

The server keeps a control ``c`` and every client ``i`` its own ``c_i``. Each local SGD
step follows ``g + c − c_i`` instead of ``g`` (a ``LocalTrainer`` grad hook). After K local
steps with learning rate η from the global ``x`` to ``y_i``, option II of the paper sets

    c_i⁺ = c_i − c + (x − y_i) / (K·η),      Δc_i = c_i⁺ − c_i

and the server, from the ``Δc_i`` of the clients that reported,

    c ← c + Σ_i p_i · Δc_i,      p_i = n_i / (examples of all N clients),

so that ``c = Σ_i p_i c_i`` over the whole federation at every round: the control of the
sample-weighted objective FedAvg's aggregation optimizes (with equal n_i this is the
paper's ``c + (1/N) Σ Δc_i``; on Dirichlet(0.1) digits it reaches the target accuracy in 6
rounds where the unweighted form needs 19). ``Δc_i`` is never put through a robust rule,
which would mix it (of the size of update / (K·η)) into the model update's norms and
distances; the model update itself goes through the configured aggregator.

``c`` travels down as ``aux/scaffold_c/<name>`` next to the weights; ``Δc_i`` travels up
as ``aux/scaffold_dc/<name>`` next to the update, declared to the server's validator
through ``Strategy.update_extras``. ``c_i`` lives in the client's persistent state (and so
in the checkpoint), ``c`` in the strategy's ``state_dict``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from fedloom.algorithms.fednova import step_normalizer
from fedloom.client.context import AUX_PREFIX, FitContext, UpdateHook
from fedloom.core.tensors import Tensors
from fedloom.server.aggregate import WeightedSum
from fedloom.server.optimizer import OptimizerFactory
from fedloom.server.strategy import Aggregator, AggregatorFactory, Strategy

C_DOWN = f"{AUX_PREFIX}scaffold_c/"
DC_UP = f"{AUX_PREFIX}scaffold_dc/"
DC_WEIGHT = f"{AUX_PREFIX}scaffold_weight"
"""In the round's aggregate: Σ n_i of the clients whose Δc_i it sums (a 0-d tensor)."""
C_CLIENT = "scaffold_ci/"
C_SERVER = "scaffold_c/"


def client_control_update(
    c_i: Tensor, c: Tensor, update: Tensor, steps: float, lr: float
) -> tuple[Tensor, Tensor]:
    """Option II: ``(c_i⁺, Δc_i)`` from the local update ``y_i − x`` after ``steps`` steps.

    With local momentum ρ pass the effective step count ``Σ_t (1−ρ^t)/(1−ρ)`` instead of K:
    the displacement of K momentum steps along a fixed gradient g is that count times η·g.
    """
    new = c_i - c - update / (steps * lr)
    return new, new - c_i


def server_control_update(c: Tensor, weighted_dc: Tensor, population_examples: float) -> Tensor:
    """``c + Σ n_i Δc_i / n``, with n the examples of all N clients."""
    return c + weighted_dc / population_examples


class _SplitAggregator:
    """The model update through the strategy's aggregator; ``Σ n_i Δc_i`` on the side."""

    def __init__(self, inner: Aggregator) -> None:
        self.inner = inner
        self.dc = WeightedSum()

    @property
    def count(self) -> int:
        return self.inner.count

    def add(self, client_id: str, update: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
        model = {n: t for n, t in update.items() if not n.startswith(DC_UP)}
        self.inner.add(client_id, model, meta)
        weight = float(meta["num_examples"])  # checked by the server before aggregation
        self.dc.add({n: t for n, t in update.items() if n.startswith(DC_UP)}, weight)

    def result(self) -> Tensors:
        weight = torch.tensor(self.dc.weight, dtype=torch.float64)
        return {**self.inner.result(), **self.dc.total, DC_WEIGHT: weight}


class ScaffoldStrategy(Strategy):
    def __init__(self, optimizer: OptimizerFactory, aggregator: AggregatorFactory) -> None:
        super().__init__("scaffold", optimizer, aggregator)
        self.c: Tensors = {}
        self.population_examples: float | None = None
        """n, the examples of all N clients; ``prepare`` sets it."""

    def start(self, global_state: Mapping[str, Tensor]) -> None:
        super().start(global_state)
        self.c = {n: torch.zeros_like(t) for n, t in global_state.items()}

    def downlink_extras(self) -> Tensors:
        return {C_DOWN + n: t for n, t in self.c.items()}

    def update_extras(self, global_state: Mapping[str, Tensor]) -> Tensors:
        return {DC_UP + n: torch.zeros_like(t) for n, t in global_state.items()}

    def new_aggregator(self, rnd: int) -> Aggregator:
        return _SplitAggregator(super().new_aggregator(rnd))

    def apply(self, global_state: Mapping[str, Tensor], aggregate: Mapping[str, Tensor]) -> Tensors:
        weight = float(aggregate.get(DC_WEIGHT, 0.0))
        if weight <= 0:
            raise ValueError("SCAFFOLD: apply() needs the round's aggregate of at least one update")
        # unknown n: everyone took part, so this round's examples are all of them
        population = self.population_examples or weight
        for name in self.c:
            self.c[name] = server_control_update(self.c[name], aggregate[DC_UP + name], population)
        delta = {n: t for n, t in aggregate.items() if not n.startswith(AUX_PREFIX)}
        return super().apply(global_state, delta)

    def state_dict(self) -> tuple[Tensors, dict[str, Any]]:
        tensors, rest = super().state_dict()
        return {**tensors, **{C_SERVER + n: t.clone() for n, t in self.c.items()}}, rest

    def load_state_dict(self, tensors: Mapping[str, Tensor], rest: Mapping[str, Any]) -> None:
        self.c = {
            n[len(C_SERVER) :]: t.clone() for n, t in tensors.items() if n.startswith(C_SERVER)
        }
        opt = {n: t for n, t in tensors.items() if not n.startswith(C_SERVER)}
        super().load_state_dict(opt, rest)


def _client_control(ctx: FitContext, name: str, like: Tensor) -> Tensor:
    c_i = ctx.state.get(C_CLIENT + name)
    return torch.zeros_like(like) if c_i is None else c_i


def drift_correction(model: nn.Module, ctx: FitContext) -> None:
    """Grad hook: ``g ← g + c − c_i`` for every parameter the server controls."""
    for name, param in model.named_parameters():
        c = ctx.aux.get(C_DOWN + name)
        if c is None or param.grad is None:
            continue
        c_i = ctx.state.get(C_CLIENT + name)  # none yet: c_i = 0 (no zeros built per step)
        param.grad.add_(c if c_i is None else c - c_i)


def control_variate_hook(lr: float, momentum: float = 0.0) -> UpdateHook:
    """Update hook: refresh ``c_i`` in the client's state and attach ``Δc_i`` to the update."""

    def hook(update: Tensors, ctx: FitContext) -> Tensors:
        if ctx.result is None or ctx.result.steps == 0:
            raise ValueError("SCAFFOLD needs at least one local step to update c_i")
        steps = step_normalizer(ctx.result.steps, momentum)
        out = dict(update)
        for name, delta in update.items():
            c = ctx.aux.get(C_DOWN + name)
            if c is None:
                raise ValueError(f"SCAFFOLD: the server sent no control variate for {name}")
            new, dc = client_control_update(_client_control(ctx, name, c), c, delta, steps, lr)
            ctx.state[C_CLIENT + name] = new
            out[DC_UP + name] = dc
        return out

    return hook
