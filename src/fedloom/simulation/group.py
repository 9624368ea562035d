"""The vectorized simulation as a transport: a round's clients train as groups.

``exchange(messages)`` does for each client what ``Client.handle`` does, with the training
in the middle done for a whole group at once (``fedloom.simulation.vectorized``):

1. ``Client.start``: the fit message checked, the global weights (the payload is decoded
   once per round, not once per client), the requested client evaluation;
2. the client's minibatch indices, drawn by the trainer from the client's own stream;
3. groups of clients, sorted by step count, trained together;
4. ``Client.finish``: the update checked finite, the update hooks (clipping, local DP
   noise, SCAFFOLD's control delta, attacks), the uplink codec; or, asked through
   ``exchange_grouped`` for a group with no hooks and the lossless codec, the group's
   stacked updates as one ``GroupReply`` the server checks row by row
   (``fedloom.simulation.rows``).

Replies go to the server as every transport's do, so its validation, codecs and
aggregation are the same code path. A client whose fit raises becomes a ``Failure`` and
the round goes on; a group whose vectorized training raises is trained one by one.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from fedloom.algorithms.scaffold import C_CLIENT, C_DOWN
from fedloom.client.client import Client
from fedloom.client.context import FitContext, TrainResult
from fedloom.core.message import Message
from fedloom.core.seeding import derive_seed
from fedloom.core.tensors import Tensors
from fedloom.data.base import TensorData
from fedloom.server.group_reply import GroupReply
from fedloom.simulation.rows import can_reply_as_group, group_reply
from fedloom.simulation.vectorized import (
    ClientJob,
    Randomness,
    StepRule,
    train_stacked,
)
from fedloom.transport.base import Reply
from fedloom.transport.inprocess import Handler, InProcessTransport, client_failed

log = logging.getLogger(__name__)

GROUP_SIZE = 256
"""Most clients trained in one batched call (bounds the stacked weights and batches)."""


@dataclass(frozen=True)
class GroupPlan:
    rule: StepRule
    randomness: Randomness = "error"
    scaffold: bool = False
    """Add SCAFFOLD's drift correction ``c − c_i`` to every gradient."""
    group_size: int = GROUP_SIZE


@dataclass
class _Fit:
    cid: str
    client: Client
    ctx: FitContext
    job: ClientJob
    payload: int
    """Which payload the fit started from (its identity): a group shares one."""


class VectorizedTransport:
    """Trains the clients of each round in vectorized groups (see the module docstring)."""

    def __init__(self, handlers: Mapping[str, Handler], plan: GroupPlan) -> None:
        self.clients = {cid: c for cid, h in handlers.items() if (c := _client_of(h))}
        self.one_by_one = InProcessTransport(handlers)
        self.plan = plan

    def exchange(self, messages: Mapping[str, Message]) -> Iterator[Reply]:
        for item in self._replies(messages, grouped=False):
            assert not isinstance(item, GroupReply)  # grouped=False gives none
            yield item

    def exchange_grouped(self, messages: Mapping[str, Message]) -> Iterator[Reply | GroupReply]:
        """``exchange``, where a group whose clients' ``finish`` is only ``local − global``
        and a lossless encoding answers with one ``GroupReply`` (``fedloom.simulation.rows``)."""
        return self._replies(messages, grouped=True)

    def _replies(
        self, messages: Mapping[str, Message], *, grouped: bool
    ) -> Iterator[Reply | GroupReply]:
        others = {cid: m for cid, m in messages.items() if cid not in self.clients}
        yield from self.one_by_one.exchange(others)  # a handler that is not a Client
        fits: list[_Fit] = []
        decoded: dict[int, Tensors] = {}  # the round's one payload, decoded once
        for cid, message in messages.items():
            if cid in others:
                continue
            try:
                fits.append(self._start(cid, message, decoded))
            except Exception as error:
                yield cid, client_failed(cid, message.round, error)
        # a group shares its starting weights (one payload) and is sorted by step count
        # (stable), so that little padding is needed
        fits.sort(key=lambda fit: (fit.payload, -len(fit.job.batches)))
        size = self.plan.group_size
        for _, same_start in itertools.groupby(fits, key=lambda fit: fit.payload):
            starting = list(same_start)
            for first in range(0, len(starting), size):
                yield from self._run_group(starting[first : first + size], messages, grouped)

    def _start(self, cid: str, message: Message, decoded: dict[int, Tensors]) -> _Fit:
        client = self.clients[cid]
        key = id(message.payload)
        if key not in decoded and message.kind == "fit":
            decoded[key] = client.down.decode(message.payload)
        ctx = client.start(message, decoded.get(key), load=False)
        trainer = client.trainer
        data = client.data
        assert isinstance(data, TensorData)  # only such clients are in self.clients
        batches = list(trainer.batches(len(data), client.shuffle(ctx), ctx))
        job = ClientJob(data, batches, self._correction(ctx) if self.plan.scaffold else None)
        return _Fit(cid, client, ctx, job, key)

    @staticmethod
    def _correction(ctx: FitContext) -> Tensors:
        """SCAFFOLD's ``c − c_i`` (``c_i`` = 0 before the client's first round)."""
        out: Tensors = {}
        for name, c in ctx.aux.items():
            if name.startswith(C_DOWN):
                param = name.removeprefix(C_DOWN)
                c_i = ctx.state.get(C_CLIENT + param)
                out[param] = c if c_i is None else c - c_i
        return out

    def _run_group(
        self, fits: Sequence[_Fit], messages: Mapping[str, Message], grouped: bool
    ) -> Iterator[Reply | GroupReply]:
        if not fits:
            return
        first = fits[0]
        model, rnd = first.client.model, first.ctx.round
        try:
            with _group_rng(self.plan.randomness, first.client.seed, rnd, first.cid):
                trained = train_stacked(
                    model,
                    [fit.job for fit in fits],
                    first.ctx.global_state,
                    self.plan.rule,
                    first.client.trainer.loss,
                    randomness=self.plan.randomness,
                )
        except Exception as error:  # train this group one by one instead
            log.warning("vectorized training failed (%s); this group trains one by one", error)
            yield from self.one_by_one.exchange({f.cid: messages[f.cid] for f in fits})
            return
        clients = [fit.client for fit in fits]
        if grouped and can_reply_as_group(clients):
            failures, reply = group_reply(rnd, clients, [fit.ctx for fit in fits], trained)
            yield from failures
            if reply is not None:
                yield reply
            return
        results = [trained.job(k) for k in range(len(fits))]
        by_cid = {fit.cid: (fit, result) for fit, result in zip(fits, results, strict=True)}
        for cid in messages:  # the round's own order, within the group
            if cid not in by_cid:
                continue
            fit, result = by_cid[cid]
            fit.ctx.result = TrainResult(len(fit.client.data), result.loss, result.steps)
            local = {**fit.ctx.global_state, **result.local}  # untrained: unchanged
            try:
                yield cid, _finish(fit, local)
            except Exception as error:
                yield cid, client_failed(cid, rnd, error)


@contextmanager
def _group_rng(randomness: Randomness, seed: int, rnd: int, cid: str) -> Iterator[None]:
    """The group's own seeded stream for dropout masks, when the model draws any
    (``randomness='different'``); a model that draws none needs no stream (seeding the
    global one costs milliseconds: more than a small model's step)."""
    if randomness == "error":
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "dropout", rnd, cid))
        yield


def _finish(fit: _Fit, local: Tensors) -> Message:
    client, ctx = fit.client, fit.ctx
    if not client.hooks:
        return client.finish(ctx, local)
    with torch.random.fork_rng(devices=[]):  # as Client.handle runs its hooks
        torch.manual_seed(derive_seed(client.seed, "dropout", ctx.round, client.client_id))
        return client.finish(ctx, local)


def _client_of(handler: Handler) -> Client | None:
    """The ``Client`` behind a handler (the client, or its bound ``handle``) with its data in
    memory; None for any other handler, which the transport calls as it is."""
    owner = getattr(handler, "__self__", handler)
    if isinstance(owner, Client) and isinstance(owner.data, TensorData):
        return owner
    return None  # e.g. a client whose data is read lazily: not vectorized
