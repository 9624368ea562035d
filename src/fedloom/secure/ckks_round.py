"""A CKKS round (``secure.mode=ckks``): clients encrypt, the server adds, a key holder
that is not the server decrypts only the sum.

Each client flattens its update ``u`` and sends ``Enc([w·u, w, w·loss])`` with
``w = min(num_examples, secure.max_weight)``, so neither a count nor a loss reaches the
server in the clear. The server checks each reply (kind, round, sender, size, every
ciphertext: see :func:`fedloom.secure.ckks.parse`), adds the ciphertexts, and asks the key
holder (:class:`fedloom.secure.authority.KeyAuthority`, its own process) to decrypt the
sum once. Clients hold the public context from setup; its bytes count in ``bytes_down``
the first round a client takes part.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from safetensors.numpy import load, save

from fedloom.core.codec import Codec
from fedloom.core.errors import FedloomError, NonFinite, UpdateRejected
from fedloom.core.message import Message, payload_bytes
from fedloom.secure.authority import KeyAuthority
from fedloom.secure.ckks import CkksParams, EncryptedSum, encrypt, load_public
from fedloom.secure.round import FixedAggregate
from fedloom.secure.vector import Layout
from fedloom.transport.inprocess import Handler
from fedloom.transport.wire import frame_size

if TYPE_CHECKING:
    from fedloom.server.server import RoundTally, Server

log = logging.getLogger(__name__)

CKKS_KEY = "ckks"
"""Fit-message meta that asks for an encrypted answer (its value: the round)."""
REPLY_KIND: Literal["ckks_result"] = "ckks_result"


def pack(chunks: list[bytes]) -> bytes:
    """Ciphertexts as one safetensors blob of uint8 arrays ``c0``, ``c1``, ..."""
    return save({f"c{i}": np.frombuffer(c, dtype=np.uint8) for i, c in enumerate(chunks)})


def unpack(data: bytes, expected: int) -> list[bytes]:
    try:
        arrays = load(data)
    except Exception as error:  # a hostile blob must never crash the round
        raise UpdateRejected(f"ckks: unreadable reply ({type(error).__name__})") from None
    if sorted(arrays) != sorted(f"c{i}" for i in range(expected)):
        raise UpdateRejected(f"ckks: reply holds {len(arrays)} ciphertexts, expected {expected}")
    return [arrays[f"c{i}"].tobytes() for i in range(expected)]


class CkksRound:
    """The server's side: one exchange, an encrypted sum, one decryption by the key holder."""

    def __init__(
        self, authority: KeyAuthority, public: bytes, layout: Layout, params: CkksParams
    ) -> None:
        self.authority, self.public, self.layout, self.params = authority, public, layout, params
        self.context = load_public(public)
        self.length = layout.size + 2  # w·u, then w and w·loss
        self.limit = params.chunks(self.length) * (params.max_ciphertext_bytes() + 64) + 4096
        self.informed: set[str] = set()
        """Clients that already hold the public context."""
        self.last_aborted: str | None = None

    def instruct(self, rnd: int, sampled: list[str] | Any) -> dict[str, dict[str, Any]]:
        return {cid: {CKKS_KEY: rnd} for cid in sampled}

    def collect(
        self, server: Server, rnd: int, messages: Mapping[str, Message], tally: RoundTally
    ) -> FixedAggregate:
        new = [cid for cid in messages if cid not in self.informed]
        tally.bytes_down += len(self.public) * len(new)
        self.informed.update(new)
        total = EncryptedSum(self.context, self.length, self.params)
        for cid, answer in server.transport.exchange(messages):
            if (reply := tally.received(cid, answer)) is None:
                continue
            try:
                total.add(self._checked(reply, rnd, cid))
            except UpdateRejected as why:
                tally.non_finite += isinstance(why, NonFinite)
                server._reject(rnd, cid, str(why), tally)
        self.last_aborted = None
        if total.count == 0:
            return FixedAggregate()
        try:
            flat = self.authority.decrypt_sum(rnd, total.serialized(), self.length)
        except FedloomError as why:
            self.last_aborted = str(why)
            log.error("round %d: %s; the global model is unchanged", rnd, why)
            return FixedAggregate()
        weight, weighted_loss = float(flat[-2]), float(flat[-1])
        if not weight > 0.5:  # weights are whole examples: a sum below one is noise or forgery
            self.last_aborted = f"decrypted weight sum {weight:.3g} is not positive"
            log.error("round %d: %s; the global model is unchanged", rnd, self.last_aborted)
            return FixedAggregate()
        tally.loss_sum += weighted_loss
        tally.examples += round(weight)
        return FixedAggregate(self.layout.unflatten(flat[:-2] / weight), total.count)

    def _checked(self, reply: Message, rnd: int, cid: str) -> list[bytes]:
        if reply.kind != REPLY_KIND:
            raise UpdateRejected(f"expected a {REPLY_KIND}, got {reply.kind!r}")
        if reply.round != rnd:
            raise UpdateRejected(f"reply is for round {reply.round}, the server is in round {rnd}")
        if reply.sender != cid:
            raise UpdateRejected(f"reply signed by {reply.sender!r} arrived from {cid!r}")
        if frame_size(reply) > self.limit:
            raise UpdateRejected(f"ckks reply of {frame_size(reply)} bytes exceeds {self.limit}")
        return unpack(payload_bytes(reply.payload), self.params.chunks(self.length))

    def metrics(self, rnd: int) -> dict[str, Any]:
        return {"secure_aborted": self.last_aborted}


class CkksClientHandler:
    """A client's side: trains through its plain handler, answers with ciphertexts."""

    def __init__(
        self,
        inner: Handler,
        cid: str,
        up: Codec,
        layout: Layout,
        public: bytes,
        params: CkksParams,
        max_weight: int,
    ) -> None:
        self.inner, self.cid, self.up, self.layout = inner, cid, up, layout
        self.public, self.params, self.max_weight = public, params, max_weight
        self._context: Any = None

    def __call__(self, message: Message) -> Message:
        if message.kind != "fit" or CKKS_KEY not in message.meta:
            return self.inner(message)
        plain = {k: v for k, v in message.meta.items() if k != CKKS_KEY}
        reply = self.inner(dataclasses.replace(message, meta=plain))
        flat = self.layout.flatten(self.up.decode(reply.payload))
        if not np.isfinite(flat).all():
            raise NonFinite("the update is not finite")
        weight = float(min(int(reply.meta["num_examples"]), self.max_weight))
        loss = float(reply.meta.get("train_loss") or 0.0)
        vector = np.concatenate([flat * weight, [weight, weight * loss]])
        if self._context is None:
            self._context = load_public(self.public)
        chunks = encrypt(self._context, vector, self.params)
        return Message(REPLY_KIND, message.round, self.cid, pack(chunks), {})
