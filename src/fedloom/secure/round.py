"""A SecAgg+ round driven through the run's transport: the server's phase and the
client's handler.

The four stages are four exchanges of ``Message``s over the same ``Transport`` as a
plain round (so the same stage messages can travel over gRPC):

1. ``fit`` (the global weights, with the encoded ``RoundSetup`` in ``meta["secagg"]``)
   → the client trains, encodes its update as an integer vector, keeps it and answers
   ``secagg_result`` with its ``AdvertiseKeys``;
2. ``secagg`` ``KeyDirectory`` → ``ShareKeys``;
3. ``secagg`` ``ForwardedShares`` → ``MaskedInput``;
4. ``secagg`` ``UnmaskRequest`` → ``UnmaskResponse``.

Every reply is checked (kind, round, the transport's sender, size, wire format) and then
by :class:`SecAggServer` (stage, replay, forgery); a bad one is that client's rejection
and the client is dropped from the round. Bytes of every stage count in ``bytes_up`` and
``bytes_down``. When recovery is impossible the round is logged and yields no aggregate:
the model stays unchanged and the next round starts with fresh keys.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from torch import Tensor

from fedloom.core.clientref import client_ref
from fedloom.core.codec import Codec
from fedloom.core.errors import FedloomError, NonFinite, UpdateRejected
from fedloom.core.message import Message, payload_bytes
from fedloom.core.tensors import Tensors
from fedloom.secure import messages as wire
from fedloom.secure.client import SecAggClient
from fedloom.secure.errors import SecAggAborted
from fedloom.secure.server import SecAggServer, SecureSum
from fedloom.secure.vector import Decoded, Layout, VectorCodec
from fedloom.transport.inprocess import Handler
from fedloom.transport.wire import frame_size

if TYPE_CHECKING:
    from fedloom.server.server import RoundTally, Server

log = logging.getLogger(__name__)

SETUP_KEY = "secagg"
"""Fit-message meta: ``{"id": the client's id in the round, "setup": RoundSetup}``."""
STAGE_KEY = "stage"
"""``secagg`` message meta: the stage it belongs to (for logs; the payload decides)."""
SLACK_BYTES = 64 * 1024
"""Allowance for a stage reply's header beyond its masked vector and per-peer shares."""


@dataclass
class SecureRoundLog:
    """What the last secure round did, for its metrics line."""

    survivors: int = 0
    dropped_after_keys: int = 0
    recovered: int = 0
    """Clients in the sum that went silent in the unmask stage (masks recovered)."""
    aborted: str | None = None
    server_cpu_s: float = 0.0
    bytes_down: int = 0
    """Bytes of the stage messages after the fit messages (keys, shares, requests)."""


@dataclass
class FixedAggregate:
    """The aggregator a secure round hands the strategy: its mean is already known."""

    mean: Tensors = field(default_factory=dict)
    survivors: int = 0

    @property
    def count(self) -> int:
        return self.survivors

    def add(self, client_id: str, update: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
        raise FedloomError("a secure round's aggregate is fixed; no update can be added")

    def result(self) -> Tensors:
        return self.mean


class SecureRound:
    """The server's side: instructs the fit messages, then drives the stages."""

    def __init__(self, codec: VectorCodec, layout: Layout, neighbors: int, threshold: int) -> None:
        self.codec, self.layout = codec, layout
        self.neighbors, self.threshold = neighbors, threshold
        self._rounds: dict[int, tuple[SecAggServer | None, dict[str, int]]] = {}
        self.last = SecureRoundLog()
        self.last_sum: SecureSum | None = None
        """The last round's modular sum (tests compare it with the plain sum)."""

    def instruct(self, rnd: int, sampled: list[str] | Any) -> dict[str, dict[str, Any]]:
        """Start round ``rnd``'s protocol: each sampled client gets the setup in its fit."""
        ids = {cid: k for k, cid in enumerate(sampled)}
        n = len(ids)
        if n < 2:  # nothing to hide a single update in: the round is skipped
            self._rounds = {rnd: (None, ids)}
            return {}
        k = min(self.neighbors, n - 1)
        server = SecAggServer(
            rnd, list(ids.values()), self.codec.length, self.codec.bits, k, min(self.threshold, k)
        )
        self._rounds = {rnd: (server, ids)}
        setup = base64.b64encode(wire.encode(server.setup())).decode()
        return {cid: {SETUP_KEY: {"id": k, "setup": setup}} for cid, k in ids.items()}

    def collect(
        self, server: Server, rnd: int, messages: Mapping[str, Message], tally: RoundTally
    ) -> FixedAggregate:
        if rnd not in self._rounds:
            raise FedloomError(f"secure round {rnd} was not set up (instruct was not called)")
        secagg, ids = self._rounds.pop(rnd)
        self.last = SecureRoundLog()
        if secagg is None:
            self.last.aborted = f"{len(ids)} client(s) sampled; secure aggregation needs 2"
            log.error("round %d: %s; the global model is unchanged", rnd, self.last.aborted)
            tally.failed.extend(cid for cid in ids if cid not in tally.failed)
            return FixedAggregate()
        names = {k: cid for cid, k in ids.items()}
        replied = self._exchange(server, rnd, secagg, messages, ids, tally)
        try:
            outbox: dict[int, wire.Message] = dict(self._timed(secagg.close_advertise))
            for stage in (wire.SHARE, wire.MASK, wire.UNMASK):
                sent = {
                    names[k]: Message("secagg", rnd, "server", wire.encode(m), {STAGE_KEY: stage})
                    for k, m in outbox.items()
                }
                stage_bytes = sum(frame_size(m) for m in sent.values())
                tally.bytes_down += stage_bytes
                self.last.bytes_down += stage_bytes
                replied = self._exchange(server, rnd, secagg, sent, ids, tally)
                if stage == wire.SHARE:
                    outbox = dict(self._timed(secagg.close_shares))
                elif stage == wire.MASK:
                    if replied:  # masked inputs reached the server: a release
                        self.codec.released(rnd)
                    outbox = dict(self._timed(secagg.close_masked))
            result: SecureSum = self._timed(secagg.finish)
            decoded = self.codec.decode(result.total, len(result.survivors), rnd)
        except (SecAggAborted, FedloomError) as why:
            self.last.aborted = str(why)
            log.error("round %d: %s; the global model is unchanged", rnd, why)
            for cid in messages:
                if cid not in tally.failed and cid not in tally.rejected:
                    tally.failed.append(cid)
            return FixedAggregate()
        self.last_sum = result
        survivors = set(result.survivors)
        self.last.survivors = len(survivors)
        self.last.dropped_after_keys = len(result.dropped)
        self.last.recovered = len(survivors - replied)
        # failed: not in the sum (a client silent only at the unmask stage is in it)
        tally.failed[:] = [c for c in tally.failed if ids.get(c) not in survivors]
        for cid, k in ids.items():
            if k not in survivors and cid not in tally.failed and cid not in tally.rejected:
                tally.failed.append(cid)
        return self._aggregate(decoded, len(survivors), tally)

    def _aggregate(self, decoded: Decoded, survivors: int, tally: RoundTally) -> FixedAggregate:
        if decoded.loss is not None:
            tally.loss_sum += decoded.loss * decoded.weight
            tally.examples += decoded.weight
        return FixedAggregate(self.layout.unflatten(decoded.mean), survivors)

    def _timed(self, call: Any) -> Any:
        start = time.process_time()
        try:
            return call()
        finally:
            self.last.server_cpu_s += time.process_time() - start

    def _exchange(
        self,
        server: Server,
        rnd: int,
        secagg: SecAggServer,
        sent: Mapping[str, Message],
        ids: Mapping[str, int],
        tally: RoundTally,
    ) -> set[int]:
        """One stage's exchange; returns the round ids whose reply was accepted."""
        accepted: set[int] = set()
        for cid, answer in server.transport.exchange(sent):
            if (reply := tally.received(cid, answer)) is None:
                continue
            try:
                stage_message = self._checked(reply, rnd, cid, secagg)
                self._timed(partial(secagg.receive, ids[cid], stage_message))
            except UpdateRejected as why:
                tally.non_finite += isinstance(why, NonFinite)
                server._reject(rnd, cid, str(why), tally)
                continue
            accepted.add(ids[cid])
        return accepted

    def _checked(self, reply: Message, rnd: int, cid: str, secagg: SecAggServer) -> Any:
        if reply.kind != "secagg_result":
            raise UpdateRejected(f"expected a secagg_result, got {reply.kind!r}")
        if reply.round != rnd:
            raise UpdateRejected(f"reply is for round {reply.round}, the server is in round {rnd}")
        if reply.sender != cid:
            raise UpdateRejected(f"reply signed by {reply.sender!r} arrived from {cid!r}")
        limit = self.reply_limit(secagg.neighbors)
        if frame_size(reply) > limit:
            raise UpdateRejected(f"stage reply of {frame_size(reply)} bytes exceeds {limit}")
        try:
            return wire.decode(payload_bytes(reply.payload))
        except UpdateRejected:
            raise
        except Exception as error:  # a hostile payload must never crash the round
            raise UpdateRejected(f"undecodable stage message: {type(error).__name__}") from None

    def reply_limit(self, neighbors: int) -> int:
        """Largest stage reply worth reading: the bit-packed masked vector, one sealed
        share bundle per neighbour, and room for the header."""
        return (self.codec.length * self.codec.bits + 7) // 8 + 300 * neighbors + SLACK_BYTES

    def metrics(self, rnd: int) -> dict[str, Any]:
        last = self.last
        return {
            "secure_survivors": last.survivors,
            "secure_dropped": last.dropped_after_keys,
            "secure_recovered": last.recovered,
            "secure_aborted": last.aborted,
            "secure_server_cpu_s": round(last.server_cpu_s, 6),
            "secure_stage_bytes_down": last.bytes_down,
        }


class SecureClientHandler:
    """A client's side: wraps its plain handler (training) and answers each stage."""

    def __init__(
        self, inner: Handler, cid: str, up: Codec, layout: Layout, codec: VectorCodec
    ) -> None:
        self.inner, self.cid, self.up = inner, cid, up
        self.layout, self.codec = layout, codec
        self._round: int | None = None
        self._client: SecAggClient | None = None
        self._vector: np.ndarray | None = None
        self.last_input: np.ndarray | None = None
        """The integer vector this client masked last (tests check the sum against it)."""
        self.protocol_cpu_s = 0.0
        """CPU seconds spent on encoding and the protocol (not training), all rounds."""

    def __call__(self, message: Message) -> Message:
        if message.kind == "fit" and SETUP_KEY in message.meta:
            return self._train_and_advertise(message)
        if message.kind == "secagg":
            start = time.process_time()
            try:
                return self._stage(message)
            finally:
                self.protocol_cpu_s += time.process_time() - start
        return self.inner(message)

    def _train_and_advertise(self, message: Message) -> Message:
        own_id, setup = _parse_setup(message.meta[SETUP_KEY])
        if setup.round != message.round:
            raise UpdateRejected(f"setup for round {setup.round} in round {message.round}'s fit")
        self._round, self._client, self._vector = None, None, None  # a new round forgets
        client = SecAggClient(own_id, setup)
        plain = {k: v for k, v in message.meta.items() if k != SETUP_KEY}
        reply = self.inner(dataclasses.replace(message, meta=plain))
        start = time.process_time()
        update = self.up.decode(reply.payload)
        loss = float(reply.meta.get("train_loss") or 0.0)
        flat = self.layout.flatten(update)
        examples = int(reply.meta["num_examples"])
        vector = self.codec.encode(flat, examples, loss, message.round, self.cid)
        if vector.shape != (setup.length,):
            raise FedloomError(f"encoded {vector.shape[0]} values; the round has {setup.length}")
        self._round, self._client, self._vector = message.round, client, vector
        self.last_input = vector
        out = self._reply(message.round, client.advertise())
        self.protocol_cpu_s += time.process_time() - start
        return out

    def _stage(self, message: Message) -> Message:
        if self._client is None or self._vector is None or message.round != self._round:
            raise UpdateRejected(f"{client_ref(self.cid)}: no secure round {message.round} open")
        incoming = wire.decode(payload_bytes(message.payload))
        client = self._client
        if isinstance(incoming, wire.KeyDirectory):
            out: wire.ClientMessage = client.share_keys(incoming)
        elif isinstance(incoming, wire.ForwardedShares):
            out = client.masked_input(incoming, self._vector)
        elif isinstance(incoming, wire.UnmaskRequest):
            out = client.unmask(incoming)
            self._client, self._vector = None, None  # the round is over for this client
        else:
            raise UpdateRejected(f"unexpected {type(incoming).__name__} from the server")
        return self._reply(message.round, out)

    def _reply(self, rnd: int, out: wire.ClientMessage) -> Message:
        return Message("secagg_result", rnd, self.cid, wire.encode(out), {})


def _parse_setup(field_value: Any) -> tuple[int, wire.RoundSetup]:
    if not isinstance(field_value, dict) or set(field_value) != {"id", "setup"}:
        raise UpdateRejected("malformed secure-aggregation setup")
    own_id, raw = field_value["id"], field_value["setup"]
    if not isinstance(own_id, int) or isinstance(own_id, bool) or not isinstance(raw, str):
        raise UpdateRejected("malformed secure-aggregation setup")
    try:
        setup = wire.decode(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError):
        raise UpdateRejected("malformed secure-aggregation setup (bad base64)") from None
    if not isinstance(setup, wire.RoundSetup):
        raise UpdateRejected("the fit message's setup is not a RoundSetup")
    return own_id, setup


H = TypeVar("H", bound=Handler)


class WrappedHandlers(Mapping[str, H]):
    """Every client's handler wrapped by ``make(handler, client id)`` (a secure round's
    client side); built on first use, so a lazy pool of clients stays lazy, and kept,
    since a round spans several exchanges."""

    def __init__(self, inner: Mapping[str, Handler], make: Callable[[Handler, str], H]) -> None:
        self.inner, self.make = inner, make
        self._built: dict[str, H] = {}

    def __getitem__(self, cid: str) -> H:
        if cid not in self._built:
            self._built[cid] = self.make(self.inner[cid], cid)
        return self._built[cid]

    def __contains__(self, cid: object) -> bool:
        return cid in self.inner

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[str]:
        return iter(self.inner)

    @property
    def built(self) -> dict[str, H]:
        """The handlers used so far."""
        return dict(self._built)
