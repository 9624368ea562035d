"""Server optimizers: the aggregated delta is a pseudo-gradient for a torch optimizer.

FedAvg is SGD with lr=1 on the pseudo-gradient ``-Δ``; FedAvgM adds momentum; FedAdam and
friends swap the optimizer. One mechanism for all of them (Reddi et al. 2021).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from fedloom.core.tensors import Tensors

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]


class ServerOptimizer:
    def __init__(self, global_state: Mapping[str, Tensor], factory: OptimizerFactory) -> None:
        self.names = list(global_state)
        self.params = [nn.Parameter(global_state[n].detach().clone()) for n in self.names]
        self.optimizer = factory(self.params)

    def step(self, global_state: Mapping[str, Tensor], delta: Mapping[str, Tensor]) -> Tensors:
        """New global weights from the current ones and the aggregated client delta."""
        with torch.no_grad():
            for name, param in zip(self.names, self.params, strict=True):
                param.copy_(global_state[name])
                param.grad = -delta[name].to(param.dtype) if name in delta else None
        self.optimizer.step()
        return {n: p.detach().clone() for n, p in zip(self.names, self.params, strict=True)}

    def state_dict(self) -> tuple[Tensors, dict[str, Any]]:
        """Tensors (for safetensors) and JSON-safe rest of the optimizer state."""
        state = self.optimizer.state_dict()
        tensors: Tensors = {}
        scalars: dict[str, dict[str, Any]] = {}
        for index, slots in state["state"].items():
            for key, value in slots.items():
                if isinstance(value, Tensor):
                    tensors[f"{index}.{key}"] = value.detach().clone()
                else:
                    scalars.setdefault(str(index), {})[key] = value
        return tensors, {"param_groups": state["param_groups"], "scalars": scalars}

    def load_state_dict(self, tensors: Mapping[str, Tensor], rest: Mapping[str, Any]) -> None:
        slots: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            index, slot = key.split(".", 1)
            slots.setdefault(int(index), {})[slot] = value
        for index, values in rest["scalars"].items():
            slots.setdefault(int(index), {}).update(values)
        groups = json.loads(json.dumps(rest["param_groups"]))
        self.optimizer.load_state_dict({"state": slots, "param_groups": groups})
