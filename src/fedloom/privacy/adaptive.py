"""Adaptive clipping (Andrew et al., "Differentially Private Learning with Adaptive
Clipping", NeurIPS 2021): the clip follows a target quantile γ of the update norms.

Each client contributes ``b − ½``, where b = 1 when its update norm is at most the clip;
the server sums these, adds ``N(0, σ_b²)`` and moves the clip geometrically:
``C ← C · exp(−η (b̄ − γ))`` with ``b̄ = noised sum / expected clients + ½`` (clamped to
[0, 1]), as TF Privacy's quantile estimator does. The sum is a second Gaussian query on
the same users; adding or removing one user changes it by ½ whatever the others do (a
plain count of b would change by 1, and with Poisson sampling the number of participants
is itself private), so it is a Gaussian mechanism with noise multiplier ``2σ_b``.
Composing two Gaussian mechanisms with
multipliers ``z_Δ`` and ``2σ_b`` is exactly one Gaussian mechanism with
``z⁻² = z_Δ⁻² + (2σ_b)⁻²`` (the paper's Theorem 1). So the accountant is fed ``z`` (the
configured or calibrated multiplier) and the update noise uses the larger ``z_Δ``.
"""

from __future__ import annotations

import math
from typing import Any

from fedloom.core.errors import ConfigError


def update_noise_multiplier(z: float, count_std: float) -> float:
    """``z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2)``: the update noise that, together with the noised
    count, spends the same privacy as one Gaussian release with multiplier ``z``."""
    if z <= 0:
        raise ConfigError(["privacy.adaptive_clip needs a positive noise multiplier"])
    rest = z**-2 - (2 * count_std) ** -2
    if rest <= 0:
        raise ConfigError(
            [
                f"privacy.count_noise_multiplier={count_std} is too small for noise multiplier "
                f"{z:.4g}: it must exceed z/2 = {z / 2:.4g} (the count would use the whole budget)"
            ]
        )
    return rest**-0.5


class AdaptiveClip:
    """The clip C and its geometric update toward the ``quantile`` of update norms."""

    def __init__(self, clip: float, quantile: float, lr: float, count_std: float) -> None:
        self.clip = clip
        self.quantile = quantile
        self.lr = lr
        self.count_std = count_std

    def step(self, noised_sum: float, expected: float) -> float:
        """The next clip from this round's noised sum of ``b − ½`` over the clients."""
        fraction = min(1.0, max(0.0, noised_sum / expected + 0.5))
        self.clip *= math.exp(-self.lr * (fraction - self.quantile))
        return self.clip

    def state_dict(self) -> dict[str, Any]:
        return {"clip": self.clip}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clip = float(state["clip"])
