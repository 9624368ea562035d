"""Deep Gradient Compression's client-side corrections (Lin et al. 2018), mapped to rounds.

The client's round update Δ_t plays the gradient. Around error feedback (whose residual
is DGC's accumulated velocity v), each encode:

1. *local clipping*: scales Δ_t to an L2 norm of at most ``clip`` times the running norm
   of the client's earlier (clipped) updates, ``n_t = β·n_{t-1} + (1 - β)·‖Δ_t‖`` with
   β = ``NORM_DECAY`` (the first update sets ``n`` and is not clipped): one outlying
   round cannot flood the residual, whatever the model's scale;
2. *momentum correction*: keeps a velocity ``u_t = m·u_{t-1} + Δ_t`` and hands it, not
   Δ_t, to error feedback, which sends the sparsified ``v_t = v_{t-1} + u_t`` and keeps
   the rest as ``v``;
3. *momentum factor masking*: zeroes ``u`` at the coordinates sent. ``v`` there is
   already what the codec dropped (zero for float32 values, the quantization error with
   int8), which error feedback keeps.

All of it stays in the client's persistent state (``compression.velocity.<name>``,
``compression.norm``) beside the residual, so a resumed run continues bit-identically.
Only the model's tensors get momentum and clipping; auxiliary tensors an algorithm sends
(``aux/...``, SCAFFOLD's control delta) get plain error feedback.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from fedloom.compression.feedback import FeedbackCodec
from fedloom.core.codec import DTypes, Key, Shapes, max_encoded_bytes
from fedloom.core.message import Payload
from fedloom.core.tensors import Tensors

VELOCITY_PREFIX = "compression.velocity."
NORM_KEY = "compression.norm"
NORM_DECAY = 0.9
"""β of the running update norm that the local clip is relative to."""
AUX_PREFIX = "aux/"
"""Tensors an update transform adds beside the model's (as ``fedloom.client.context``)."""


@dataclass(frozen=True)
class Corrections:
    """Which of DGC's corrections run; ``momentum=0``, ``masking=False`` and ``clip=None``
    turn each off."""

    momentum: float = 0.6
    masking: bool = True
    clip: float | None = None

    @property
    def active(self) -> bool:
        return self.momentum > 0 or self.clip is not None


def global_norm(tensors: Iterable[torch.Tensor]) -> float:
    """The L2 norm of all the tensors together."""
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in tensors))


def clip_to_running_norm(
    update: Tensors, running: float | None, clip: float
) -> tuple[Tensors, float]:
    """``update`` scaled to norm at most ``clip * running`` (untouched when ``running`` is
    None or 0: no history yet), and the new running norm."""
    norm = global_norm(update.values())
    bound = clip * running if running else math.inf
    if norm > bound:
        update = {name: t * (bound / norm) for name, t in update.items()}
        norm = bound
    new = norm if running is None else NORM_DECAY * running + (1 - NORM_DECAY) * norm
    return update, new


def step_velocity(update: Tensors, state: Tensors, momentum: float) -> Tensors:
    """``u_t = m·u_{t-1} + Δ_t`` for each tensor (``u_0 = 0``)."""
    out: Tensors = {}
    for name, t in update.items():
        previous = state.get(VELOCITY_PREFIX + name)
        out[name] = t if previous is None else momentum * previous + t
    return out


def mask_sent(velocity: Tensors, sent: Tensors) -> Tensors:
    """``velocity`` with the coordinates whose value was sent (non-zero) set to zero."""
    return {name: torch.where(sent[name] != 0, 0.0, u) for name, u in velocity.items()}


class CorrectedCodec:
    """Error feedback around ``feedback.inner`` with DGC's corrections before it; decodes,
    and bounds an upload, exactly as the inner codec."""

    def __init__(self, feedback: FeedbackCodec, corrections: Corrections) -> None:
        self.feedback = feedback
        self.corrections = corrections
        self.name = feedback.name

    def encode_stateful(self, tensors: Tensors, key: Key, state: Tensors) -> bytes:
        c = self.corrections
        model = {n: t for n, t in tensors.items() if not n.startswith(AUX_PREFIX)}
        if c.clip is not None:
            previous = state.get(NORM_KEY)
            running = None if previous is None else float(previous)
            model, norm = clip_to_running_norm(model, running, c.clip)
            state[NORM_KEY] = torch.tensor(norm, dtype=torch.float64)
        velocity = step_velocity(model, state, c.momentum) if c.momentum > 0 else model
        payload, sent = self.feedback.encode_and_send({**tensors, **velocity}, key, state)
        if c.momentum > 0:
            if c.masking:
                velocity = mask_sent(velocity, sent)
            for name, u in velocity.items():
                state[VELOCITY_PREFIX + name] = u
        return payload

    def encode(self, tensors: Tensors, key: Key = ()) -> bytes:
        """Without a client's state: the inner codec's plain encode."""
        return self.feedback.encode(tensors, key)

    def decode(self, data: Payload) -> Tensors:
        return self.feedback.decode(data)

    def max_encoded_bytes(self, shapes: Shapes, dtypes: DTypes) -> int | None:
        return max_encoded_bytes(self.feedback, shapes, dtypes)


def velocity_of(state: Tensors) -> Tensors:
    """The velocities in a client's state, by tensor name."""
    n = len(VELOCITY_PREFIX)
    return {k[n:]: v for k, v in state.items() if k.startswith(VELOCITY_PREFIX)}
