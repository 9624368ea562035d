"""``distill_feature``: a distillation strategy (``feddf``, ``fedmd``) gets its federation.

It runs first among the features, so the held-out distillation slice is gone from the
clients' data before any other feature (federated evaluation, data attacks) reads it.
"""

from __future__ import annotations

from fedloom.distill.setup import build_federation
from fedloom.distill.strategy import DistillStrategy
from fedloom.parts import Parts


def distill_feature(parts: Parts) -> None:
    strategy = parts.strategy
    if isinstance(strategy, DistillStrategy):  # assembly, not the round loop
        strategy.bind(build_federation(parts))
