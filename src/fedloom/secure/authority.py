"""The CKKS key holder as its own process: the server process never holds the secret key.

The server asks it for the public context once and, each round, for the decryption of
one encrypted sum. It decrypts at most one sum per round and never for an earlier round
than one it already answered, so a server that follows the protocol learns only sums.
It cannot tell a sum from a single client's ciphertext: against a server that deviates,
the key holder must be another party (docs/secure.md, "CKKS threat model"). In a real
deployment it runs on a machine the server's operator does not control; in simulation it
is a child process.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from fedloom.core.errors import FedloomError
from fedloom.secure.ckks import CkksParams, KeyHolder


class KeyAuthorityError(FedloomError):
    """The key holder refused a request or is gone."""


def _serve(conn: Connection, params: CkksParams) -> None:
    holder = KeyHolder(params)
    answered = 0
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        kind = request[0]
        if kind == "stop":
            return
        if kind == "public":
            conn.send(("ok", holder.public_context()))
            continue
        _, rnd, chunks, length = request
        if rnd <= answered:
            conn.send(("refused", f"round {rnd} was already decrypted (last: {answered})"))
            continue
        try:
            total = holder.decrypt(chunks, length)
        except Exception as error:
            conn.send(("refused", f"{type(error).__name__}: {error}"))
            continue
        answered = rnd
        conn.send(("ok", total))


class KeyAuthority:
    """A child process holding the secret key; use as a context manager."""

    def __init__(self, params: CkksParams | None = None) -> None:
        params = params or CkksParams()
        self.params = params
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child, params), daemon=True)
        self._process.start()
        child.close()

    def _ask(self, *request: Any) -> Any:
        try:
            self._conn.send(request)
            status, value = self._conn.recv()
        except (EOFError, OSError, BrokenPipeError) as error:
            raise KeyAuthorityError(f"the CKKS key holder is gone ({error})") from None
        if status != "ok":
            raise KeyAuthorityError(f"the CKKS key holder refused: {value}")
        return value

    def public_context(self) -> bytes:
        return bytes(self._ask("public"))

    def decrypt_sum(self, rnd: int, chunks: Sequence[bytes], length: int) -> np.ndarray:
        """The sum's ``length`` values; once per round, rounds increasing."""
        return np.asarray(self._ask("decrypt", rnd, list(chunks), length))

    def close(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(OSError):  # the child may already be gone
                self._conn.send(("stop",))
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.kill()
        self._conn.close()

    def __enter__(self) -> KeyAuthority:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
