"""The accountant of the distributed discrete Gaussian (DDG) mechanism.

Each of at least ``n`` clients adds independent discrete Gaussian noise N_Z(0, s²) to
each of the ``d`` coordinates of its integer vector; only the sum reaches the server
(secure aggregation). The sum of discrete Gaussians is *not* a discrete Gaussian, so no
Gaussian accountant applies. This module implements the bound of

    P. Kairouz, Z. Liu, T. Steinke. "The Distributed Discrete Gaussian Mechanism for
    Federated Learning with Secure Aggregation". ICML 2021, arXiv:2102.06387,
    Theorem 1 and Proposition 14 (its Rényi-DP form).

With integer sensitivities Δ₂ (L2) and Δ₁ (L1) of one client's vector and
τ = 10 · Σ_{k=1}^{n−1} exp(−2π²s² · k/(k+1)), the mechanism x ↦ x + Σ_i Z_i satisfies
(α, ε(α))-RDP for every α > 1 with

    ε(α) = min( α/2 · Δ₂²/(n s²) + τ d,
                α/2 · (Δ₂²/(n s²) + 2 Δ₁ τ/(√n s) + τ² d),
                α/2 · (Δ₂/(√n s) + τ √d)² ).

Rounds compose by adding RDP; the server knows who took part, so there is no
amplification by sampling (q = 1). (ε, δ) comes from Opacus' RDP conversion.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from opacus.accountants.analysis.rdp import get_privacy_spent

ORDERS: tuple[float, ...] = tuple(float(a) for a in [*range(2, 129), 256, 512, 1024])
"""RDP orders evaluated; ε(δ) takes the best of them."""
ACCOUNTANT = "ddg-kls21"
"""The name reported as ``accountant`` in metrics.jsonl."""


def tau(local_scale: float, n: int) -> float:
    """KLS21's τ: how far a sum of ``n`` N_Z(0, s²) is from N_Z(0, n s²)."""
    s2 = local_scale**2
    return 10.0 * sum(math.exp(-2 * math.pi**2 * s2 * k / (k + 1)) for k in range(1, n))


def rdp(
    orders: Sequence[float], l2: float, l1: float, local_scale: float, n: int, dim: int
) -> np.ndarray:
    """One release's RDP ε(α) at each order (KLS21 Proposition 14)."""
    if local_scale <= 0 or n < 1 or dim < 1:
        raise ValueError("the DDG accountant needs local_scale > 0, n >= 1, dim >= 1")
    t = tau(local_scale, n)
    l2_scale = l2 / (math.sqrt(n) * local_scale)
    l1_scale = l1 / (math.sqrt(n) * local_scale)
    out = []
    for alpha in orders:
        first = alpha / 2 * l2_scale**2 + t * dim
        second = alpha / 2 * (l2_scale**2 + 2 * l1_scale * t + t**2 * dim)
        third = alpha / 2 * (l2_scale + math.sqrt(dim) * t) ** 2
        out.append(min(first, second, third))
    return np.asarray(out)


def rounded_l2_bound(l2: float, dim: int, beta: float) -> float:
    """Largest L2 norm conditional randomized rounding lets through (KLS21 §4.1): a vector
    of norm ``l2`` rounded coordinate-wise at random stays within this with probability at
    least ``1 − beta`` per try; the client retries until it does."""
    deterministic = l2 + math.sqrt(dim)
    if beta <= 0:
        return deterministic
    squared = l2**2 + dim / 4 + math.sqrt(2 * math.log(1 / beta)) * (l2 + math.sqrt(dim) / 2)
    return min(deterministic, math.sqrt(squared))


class DDGAccountant:
    """Rounds of the DDG mechanism with fixed (Δ₂, Δ₁, s, n, d); state: rounds composed."""

    def __init__(self, l2: float, l1: float, local_scale: float, n: int, dim: int) -> None:
        self.params = (l2, l1, local_scale, n, dim)
        self._per_round = rdp(ORDERS, l2, l1, local_scale, n, dim)
        self.rounds = 0

    def step(self) -> None:
        self.rounds += 1

    def epsilon(self, delta: float, rounds: int | None = None) -> float:
        """ε after ``rounds`` releases (default: those composed so far)."""
        r = self.rounds if rounds is None else rounds
        if r == 0:
            return 0.0
        eps, _ = get_privacy_spent(orders=list(ORDERS), rdp=list(self._per_round * r), delta=delta)
        return float(eps)

    def state_dict(self) -> dict[str, Any]:
        return {"rounds": self.rounds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rounds = int(state["rounds"])
