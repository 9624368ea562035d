"""The Message: what crosses between server and client, in simulation and on a network.

A Message carries encoded tensors as ``payload`` bytes plus a small JSON-serializable
``meta`` dict. Transports move Messages and count their bytes; they never look inside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["fit", "fit_result", "error"]


@dataclass(frozen=True)
class Message:
    kind: Kind
    round: int
    sender: str
    payload: bytes = b""
    meta: dict[str, Any] = field(default_factory=dict)
