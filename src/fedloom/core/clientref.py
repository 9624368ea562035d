"""Client ids in log lines.

A DP run that withholds client information (``privacy.release_client_info=false``) must
not name in its logs who took part, missed a deadline or was rejected: that would void
the amplification by sampling its epsilon relies on. Log sites pass a client id through
``client_ref``; inside ``naming_clients(False)`` it reads "a client" instead.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

HIDDEN = "a client"

_lock = threading.Lock()
_hidden = 0  # how many open ``naming_clients(False)`` blocks; read by server threads


def client_ref(cid: str) -> str:
    """``cid``, or "a client" while a run withholds client ids."""
    return HIDDEN if _hidden else f"client {cid}"


def naming() -> bool:
    """Whether log lines may name clients (and carry their own messages) now."""
    return not _hidden


def error_text(error: BaseException) -> str:
    """An exception for a log line: its repr, or only its type while a run withholds
    client ids (a client's own error message may name it)."""
    return type(error).__name__ if _hidden else repr(error)


@contextmanager
def naming_clients(name: bool) -> Iterator[None]:
    """Within the block, log lines name clients only if ``name``."""
    global _hidden
    if name:
        yield
        return
    with _lock:
        _hidden += 1
    try:
        yield
    finally:
        with _lock:
            _hidden -= 1
