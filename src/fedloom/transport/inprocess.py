"""Simulation as a transport: clients are callables in this process, run one after another."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping

from fedloom.core.clientref import client_ref, error_text, naming
from fedloom.core.errors import NonFinite
from fedloom.core.message import Message
from fedloom.transport.base import Failure, Reply

log = logging.getLogger(__name__)
traces = logging.getLogger("fedloom.clients")
"""Client failures with their tracebacks: ``clients.log`` in the run directory."""

Handler = Callable[[Message], Message]


class InProcessTransport:
    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        self.handlers = handlers

    def exchange(self, messages: Mapping[str, Message]) -> Iterator[Reply]:
        for cid, message in messages.items():
            try:
                yield cid, self.handlers[cid](message)
            except Exception as error:  # a failing client must never stop the round
                yield cid, client_failed(cid, message.round, error)


def client_failed(cid: str, rnd: int, error: Exception) -> Failure:
    """Log a simulated client's exception (one line; the traceback to ``clients.log``)
    and turn it into the round's ``Failure`` for that client."""
    log.warning("%s failed in round %d: %s", client_ref(cid), rnd, error_text(error))
    if naming():  # the traceback may hold the client's own data and id
        traces.error("client %s, round %d", cid, rnd, exc_info=error)
    return Failure(cid, f"{type(error).__name__}: {error}", isinstance(error, NonFinite))
