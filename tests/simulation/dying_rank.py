"""A test plugin: FedAvg whose rank ``FEDLOOM_TEST_KILL_RANK`` kills itself (SIGKILL) as
round ``FEDLOOM_TEST_KILL_ROUND`` begins; without those variables it is plain FedAvg."""

from __future__ import annotations

import os
import signal
from typing import Any

from fedloom.algorithms.strategies import FedAvg
from fedloom.core.registry import register


@register("strategy", "fedavg_rank_dies", capabilities=("ranks", "robust_aggregator"))
class RankDies(FedAvg):
    def fit_config(self, rnd: int) -> dict[str, Any]:
        rank, when = (
            os.environ.get("FEDLOOM_TEST_KILL_RANK"),
            os.environ.get("FEDLOOM_TEST_KILL_ROUND"),
        )
        if rank is not None and rank == os.environ.get("RANK") and str(rnd) == when:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().fit_config(rnd)
