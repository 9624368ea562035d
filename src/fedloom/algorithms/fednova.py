"""FedNova (Wang et al. 2020): normalized averaging for clients that ran different step counts.

Plain averaging weights a client that ran many local steps more than one that ran few, and
so drifts towards the fast clients' optimum. FedNova divides each update by its client's
normalizer ``a_k`` (the number of steps, corrected for local momentum ρ), averages these
normalized directions with the data weights ``p_k = n_k / n``, and rescales by the
effective step count ``τ_eff = Σ p_k a_k``:

    Δ = τ_eff · Σ_k p_k Δ_k / a_k,    a_k = Σ_{t=1..τ_k} (1 − ρ^t) / (1 − ρ)   (a_k = τ_k at ρ=0)

When every client runs the same number of steps this is FedAvg's weighted mean. The sums
stream, so memory stays one model's worth.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from fedloom.client.context import FitContext, UpdateHook
from fedloom.core.errors import UpdateRejected
from fedloom.core.tensors import Tensors
from fedloom.server.aggregate import WeightedSum


def step_normalizer(steps: int, momentum: float) -> float:
    """``a = Σ_{t=1..steps} (1 − ρ^t)/(1 − ρ)``: the L1 norm of SGD-with-momentum's weights."""
    if momentum == 0:
        return float(steps)
    rho = momentum
    return (steps - rho * (1 - rho**steps) / (1 - rho)) / (1 - rho)


NORMALIZER_KEY = "fednova_a"
"""Reply meta key: the client's ``a_k`` when it trained with momentum (else ``steps`` is used)."""


def normalizer_of(meta: Mapping[str, Any]) -> float:
    """``a_k`` from a reply's meta, rejecting what cannot be a step count."""
    a = meta.get(NORMALIZER_KEY, meta.get("steps"))
    if not isinstance(a, int | float) or isinstance(a, bool) or not 0 < a < math.inf:
        raise UpdateRejected(f"FedNova needs a positive step count in meta, got {a!r}")
    return float(a)


def report_normalizer(momentum: float) -> UpdateHook:
    """Client hook: put ``a_k`` for this round's steps and local momentum into the reply meta."""

    def hook(update: Tensors, ctx: FitContext) -> Tensors:
        if ctx.result is not None:
            ctx.meta[NORMALIZER_KEY] = step_normalizer(ctx.result.steps, momentum)
        return update

    return hook


class NormalizedAverage:
    """Streaming FedNova aggregate; needs ``num_examples`` and ``steps`` in each update's meta."""

    def __init__(self) -> None:
        self.directions = WeightedSum()  # Σ n_k Δ_k / a_k
        self.examples = 0.0  # Σ n_k
        self.scaled_steps = 0.0  # Σ n_k a_k

    @property
    def count(self) -> int:
        return self.directions.count

    def add(self, client_id: str, update: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
        n = float(meta["num_examples"])
        a = normalizer_of(meta)
        self.directions.add(update, n / a)
        self.examples += n
        self.scaled_steps += n * a

    def result(self) -> Tensors:
        if self.examples <= 0:
            raise ValueError("no update with positive weight to average")
        tau_eff = self.scaled_steps / self.examples
        return {k: t * (tau_eff / self.examples) for k, t in self.directions.total.items()}
