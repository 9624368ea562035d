"""A strategy plugin: FedAvg whose server step is at most ``strategy.params.max_norm`` long.

    fedloom run --import examples/plugins/strategy_clipped_fedavg.py \
        strategy.name=clipped_fedavg strategy.params.max_norm=0.5
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

import fedloom
from fedloom.core.tensors import Tensors
from fedloom.server.config import StrategyConfig

FedAvg = fedloom.lookup("strategy", "fedavg")


class ClipParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_norm: float = Field(1.0, gt=0)
    """Largest global L2 norm of the aggregate the server applies."""


# Only ``apply`` changes. Aggregation and client training stay FedAvg's, and clipping
# central DP's noised aggregate is post-processing: FedAvg's capabilities still hold.
@fedloom.register(
    "strategy",
    "clipped_fedavg",
    params=ClipParams,
    capabilities={"central_dp", "dpsgd", "robust_aggregator"},
)
class ClippedFedAvg(FedAvg):
    def __init__(self, config: StrategyConfig, params: ClipParams) -> None:
        super().__init__(config, params)
        self.max_norm = params.max_norm

    def apply(self, global_state: Mapping[str, Tensor], aggregate: Mapping[str, Tensor]) -> Tensors:
        norm = torch.linalg.vector_norm(torch.stack([t.norm() for t in aggregate.values()]))
        scale = min(1.0, self.max_norm / max(float(norm), 1e-12))
        return super().apply(global_state, {n: t * scale for n, t in aggregate.items()})
