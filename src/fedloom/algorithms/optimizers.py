"""Adaptive server optimizers of Reddi et al. 2021, "Adaptive Federated Optimization".

Algorithm 2 of the paper, written on the pseudo-gradient ``g = -Δ`` the server hands to
every optimizer (so ``m`` below is the negative of the paper's ``m_t``; the step is the same):

    m_t = β1·m_{t-1} + (1 - β1)·g
    v_t = β2·v_{t-1} + (1 - β2)·g²                       FedAdam
    v_t = v_{t-1} - (1 - β2)·g²·sign(v_{t-1} - g²)         FedYogi
    v_t = v_{t-1} + g²                                     FedAdagrad
    x_{t+1} = x_t - η·m_t / (sqrt(v_t) + τ)

No bias correction, and τ is added outside the square root, exactly as in the paper.
``v`` starts at τ² (the paper asks for v_{-1} ≥ τ²), ``m`` at zero.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from fedloom.core.errors import ConfigError


class ReddiOptimizer(Optimizer, ABC):
    """The shared first moment and step; subclasses define the second-moment rule."""

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
    ) -> None:
        problems = []
        if lr <= 0:
            problems.append(f"server_lr must be > 0, got {lr}")
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            problems.append(f"beta1 and beta2 must be in [0, 1), got {beta1}, {beta2}")
        if tau <= 0:
            problems.append(f"tau must be > 0, got {tau}")
        if problems:
            raise ConfigError(problems)
        super().__init__(params, {"lr": lr, "beta1": beta1, "beta2": beta2, "tau": tau})

    @staticmethod
    @abstractmethod
    def second_moment(v: Tensor, g2: Tensor, beta2: float) -> None:
        """Update ``v`` in place from the squared pseudo-gradient ``g2``."""

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> None:  # type: ignore[override]
        if closure is not None:
            raise ValueError("server optimizers take no closure")
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.full_like(p, group["tau"] ** 2)
                g = p.grad
                state["m"].mul_(group["beta1"]).add_(g, alpha=1 - group["beta1"])
                self.second_moment(state["v"], g * g, group["beta2"])
                denom = state["v"].sqrt().add_(group["tau"])
                p.addcdiv_(state["m"], denom, value=-group["lr"])


class FedAdamOptimizer(ReddiOptimizer):
    @staticmethod
    def second_moment(v: Tensor, g2: Tensor, beta2: float) -> None:
        v.mul_(beta2).add_(g2, alpha=1 - beta2)


class FedYogiOptimizer(ReddiOptimizer):
    @staticmethod
    def second_moment(v: Tensor, g2: Tensor, beta2: float) -> None:
        # Yogi moves v towards g² additively, so a large g² cannot blow v up in one step.
        v.sub_(g2 * torch.sign(v - g2), alpha=1 - beta2)


class FedAdagradOptimizer(ReddiOptimizer):
    @staticmethod
    def second_moment(v: Tensor, g2: Tensor, beta2: float) -> None:
        v.add_(g2)
