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

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor

from fedloom.client.context import FitContext, UpdateHook
from fedloom.client.trainer import TrainConfig, planned_steps
from fedloom.core.errors import UpdateRejected
from fedloom.core.tensors import Tensors
from fedloom.server.aggregate import WeightedSum
from fedloom.server.validate import shorten


def step_normalizer(steps: int, momentum: float) -> float:
    """``a = Σ_{t=1..steps} (1 − ρ^t)/(1 − ρ)``: the L1 norm of SGD-with-momentum's weights."""
    if momentum == 0:
        return float(steps)
    rho = momentum
    return (steps - rho * (1 - rho**steps) / (1 - rho)) / (1 - rho)


NORMALIZER_KEY = "fednova_a"
"""Reply meta key: the client's ``a_k`` when it trained with momentum (else ``steps`` is used)."""


MAX_NORMALIZER = 1e12
"""Largest ``a_k`` accepted: 10**9 steps at local momentum 0.999."""


def normalizer_of(meta: Mapping[str, Any]) -> float:
    """``a_k`` from a reply's meta, rejecting what cannot be a step count."""
    key = NORMALIZER_KEY if NORMALIZER_KEY in meta else "steps"
    a = meta.get(key)
    if isinstance(a, int | float) and not isinstance(a, bool) and 0 < a <= MAX_NORMALIZER:
        return float(a)  # the comparison rejects NaN, inf and 10**400 before float()
    raise UpdateRejected(
        f"FedNova needs a step count {key} in (0, {MAX_NORMALIZER:g}] in meta, got {shorten(a)}"
    )


def planned_normalizer_check(
    train: TrainConfig, sizes: Mapping[str, int] | None
) -> Callable[[str, Mapping[str, Any]], None]:
    """Reject an ``a_k`` above what client k's planned steps allow.

    ``τ_eff = Σ p_k a_k`` scales the whole aggregate, so one client reporting a huge ``a_k``
    would blow up every round. The server knows how many steps it asked for: the
    configured ``planned_steps`` for the client's ``n`` examples (``sizes``, the server's own;
    ``None``: the validated claim). An honest client runs at most that many (a device
    budget only cuts it short), so its ``a_k`` is at most their normalizer.
    """

    def check(client_id: str, meta: Mapping[str, Any]) -> None:
        a = normalizer_of(meta)
        n = meta["num_examples"] if sizes is None else sizes.get(client_id)
        if not isinstance(n, int):
            return  # no size known: the weighting rejects the update
        steps = planned_steps(train, n)
        most = step_normalizer(steps, train.momentum)
        if a > most * (1 + 1e-9):  # the client computes the same float; allow rounding
            raise UpdateRejected(
                f"FedNova normalizer {a:g} exceeds {most:g}, that of the {steps} local steps "
                f"planned for this client"
            )

    return check


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
        return self.directions.scaled(tau_eff / self.examples)
