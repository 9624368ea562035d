"""What a client's fit knows about itself: shared by the trainer and the update hooks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fedloom.core.tensors import Tensors


@dataclass(frozen=True)
class TrainResult:
    num_examples: int
    loss: float
    """Mean training loss over every example seen this round."""
    steps: int


@dataclass
class FitContext:
    client_id: str
    round: int
    config: dict[str, Any]
    """What the server sent with this round (the message's meta)."""
    global_state: Tensors
    state: Tensors
    """This client's persistent state (residuals, control variates); survives rounds."""
    seed: int
    result: TrainResult | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    """Extra fields for the reply's meta."""
    aux: Tensors = field(default_factory=dict)
    """Extra ``aux/...`` tensors the server sent with the weights."""


AUX_PREFIX = "aux/"
"""Tensors named ``aux/...`` ride along with the weights or the update (e.g. SCAFFOLD's
control variates); they are never loaded into the model."""


def split_aux(tensors: Tensors) -> tuple[Tensors, Tensors]:
    """``(model tensors, aux tensors)`` of a received payload."""
    aux = {n: t for n, t in tensors.items() if n.startswith(AUX_PREFIX)}
    return {n: t for n, t in tensors.items() if n not in aux}, aux


UpdateHook = Callable[[Tensors, FitContext], Tensors]
"""Sees the update after local training and before encoding; returns the update to send."""
