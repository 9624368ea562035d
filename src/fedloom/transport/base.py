"""The transport contract: send one Message to each client, yield the replies as they come."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from fedloom.core.message import Message


@dataclass(frozen=True)
class Failure:
    """A client that did not answer: it raised, dropped out, or missed the deadline."""

    client_id: str
    reason: str
    diverged: bool = False
    """It raised because its own training became non-finite (``NonFinite``)."""


Reply = tuple[str, "Message | Failure"]


class Transport(Protocol):
    def exchange(self, messages: Mapping[str, Message]) -> Iterator[Reply]:
        """Deliver ``messages[cid]`` to client ``cid``; yield ``(cid, reply or Failure)``."""
        ...
