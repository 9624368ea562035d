"""The Message: what crosses between server and client, in simulation and on a network.

A Message carries encoded tensors as ``payload`` bytes plus a small JSON-serializable
``meta`` dict. Transports move Messages and count their bytes; they never look inside.
A payload received from the network is a ``memoryview`` of the frame it arrived in
(no second copy of a large update); one built locally is usually ``bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

Kind = Literal["fit", "fit_result", "error", "secagg", "secagg_result", "ckks_result"]
"""``secagg``/``secagg_result``: a secure-aggregation stage message (``fedloom.secure``);
``ckks_result``: an update encrypted under CKKS (``fedloom.secure.ckks_round``)."""

Payload: TypeAlias = "bytes | bytearray | memoryview"
"""Anything that exposes its bytes through the buffer protocol, one byte per item."""


@dataclass(frozen=True)
class Message:
    kind: Kind
    round: int
    sender: str
    payload: Payload = b""
    meta: dict[str, Any] = field(default_factory=dict)


def payload_bytes(payload: Payload) -> bytes:
    """``payload`` as ``bytes`` (the object itself when it already is, else one copy)."""
    return payload if isinstance(payload, bytes) else bytes(payload)


EVALUATE_KEY = "evaluate"
"""Fit-message meta: this client evaluates the global model on its held-out data first."""
EVAL_META = "eval"
"""Reply meta: that evaluation, ``{"n": examples, <metric>: value, ...}``."""

MAX_ABS_LOSS = 1e30
"""Largest |train_loss| a reply may report; beyond it a client's training has diverged."""
