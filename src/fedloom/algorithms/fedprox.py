"""FedProx (Li et al. 2020): each client minimises ``F_k(w) + μ/2 ‖w − w_global‖²``.

The proximal term keeps local models near the global one when clients' data differ, so
more local steps do less damage. It is a ``LocalTrainer`` penalty: added to every
minibatch loss, differentiated by autograd like the loss itself.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fedloom.client.context import FitContext
from fedloom.client.trainer import Penalty
from fedloom.core.errors import ConfigError


def proximal_term(mu: float) -> Penalty:
    """``μ/2 Σ_n ‖w_n − global_n‖²`` over the trainable parameters the server sent."""
    if mu < 0:
        raise ConfigError([f"strategy.mu must be >= 0, got {mu}"])

    def penalty(model: nn.Module, ctx: FitContext) -> Tensor:
        total = torch.zeros(())
        for name, param in model.named_parameters():
            anchor = ctx.global_state.get(name)
            if anchor is None or not param.requires_grad:
                continue
            total = total + (param - anchor).pow(2).sum()
        return 0.5 * mu * total

    return penalty
