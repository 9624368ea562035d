"""The round loop. It reaches clients only through Messages and a transport."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import torch

from fedloom.core.clientref import client_ref
from fedloom.core.codec import Codec, downlink_key
from fedloom.core.errors import NON_FINITE, Diverged, NonFinite, UpdateRejected
from fedloom.core.message import Message
from fedloom.core.tensors import Tensors
from fedloom.server.group_reply import GroupReply, collect_group, replies_of
from fedloom.server.sampler import Sampler
from fedloom.server.strategy import Aggregator, Strategy, view_meta
from fedloom.server.validate import ReplyMeta, UpdateSpec, check_reply
from fedloom.server.weights import CappedClaims, Weighting
from fedloom.transport.base import Failure, Transport
from fedloom.transport.wire import frame_size

log = logging.getLogger(__name__)

Instructions = Callable[[int, Sequence[str]], Mapping[str, Mapping[str, Any]]]
"""(round, sampled client ids) -> {client id: extra fields of its fit message}."""
ReplyObserver = Callable[[int, str, Mapping[str, Any]], None]
"""(round, client id, the reply's meta) for every accepted update."""
UpdateObserver = Callable[[int, str, Tensors], None]
"""(round, client id, the decoded update) for every accepted update; it must not change it."""
Evaluator = Callable[[Tensors], Mapping[str, float]]
"""The global state's metrics on the test split, e.g. {"test_accuracy": ..., "test_loss": ...}."""

RoundReducer = Callable[[int, Sequence[str], "Aggregator", "RoundTally"], None]
"""(round, sampled ids, aggregator, tally): combine this process's partial round with the
other processes' (torch.distributed ranks), in place, so each holds the round's totals."""

RoundCallback = Callable[["Server", dict[str, Any]], None]
"""Called after each round with the server and that round's metrics line."""

RoundGuard = Callable[[int], "str | None"]
"""Called before round r; a returned reason stops the run cleanly (e.g. a privacy budget)."""

MetricSource = Callable[[int], dict[str, Any]]
"""Extra fields for round r's metrics line (e.g. epsilon and delta)."""


@dataclass
class RoundTally:
    """What came back in one round, before it becomes a metrics line."""

    bytes_up: int = 0
    loss_sum: float = 0.0
    examples: int = 0
    failed: list[str] = field(default_factory=list)
    non_finite: int = 0
    """Answers rejected or failed because they were non-finite (``NonFinite``)."""
    rejected: dict[str, str] = field(default_factory=dict)
    bytes_down: int = 0
    """Bytes sent after the fit messages (a phase's later exchanges)."""

    def received(self, cid: str, reply: Message | Failure) -> Message | None:
        """Count one answer: a failure (listed once per client) or the reply's bytes.
        Returns the reply when it is a message."""
        if isinstance(reply, Failure):
            if cid not in self.failed:
                self.failed.append(cid)
            self.non_finite += reply.diverged
            return None
        self.bytes_up += frame_size(reply)
        return reply


class RoundPhase(Protocol):
    """Replaces a round's one fit exchange with its own (secure aggregation: several
    exchanges whose outcome is one aggregate). It fills ``tally`` and returns the
    aggregator the strategy applies."""

    def collect(
        self, server: Server, rnd: int, messages: Mapping[str, Message], tally: RoundTally
    ) -> Aggregator: ...


def _copied(state: tuple[Tensors, dict[str, Any]]) -> tuple[Tensors, dict[str, Any]]:
    tensors, rest = state
    return {n: t.clone() for n, t in tensors.items()}, copy.deepcopy(rest)


def _check_not_diverged(rnd: int, valid: int, tally: RoundTally) -> None:
    """Stop when every answer of a round with at least two was non-finite: training has
    diverged. A single non-finite update stays that client's rejection."""
    answers = len(tally.rejected) + len(tally.failed)
    if valid == 0 and answers >= 2 and tally.non_finite == answers:
        raise Diverged(
            f"updates became non-finite in round {rnd} (all {answers} had {NON_FINITE}): "
            "lower train.lr, or bound the updates (privacy.clip, strategy.aggregator=norm_bound)"
        )


class Server:
    def __init__(
        self,
        *,
        global_state: Tensors,
        client_ids: Sequence[str],
        strategy: Strategy,
        sampler: Sampler,
        transport: Transport,
        down: Codec,
        up: Codec,
        evaluate: Evaluator | None = None,
        eval_every: int = 1,
        max_update_bytes: int = 2**31,
        weighting: Weighting | None = None,
        min_updates: int = 1,
        eval_keys: Sequence[str] = ("test_accuracy", "test_loss"),
        stop_on_divergence: bool = True,
    ) -> None:
        self.global_state = global_state
        self.client_ids = list(client_ids)
        self.strategy = strategy
        self.sampler = sampler
        self.transport = transport
        self.down, self.up = down, up
        self.evaluate = evaluate
        self.eval_keys = list(eval_keys)
        """The metrics ``evaluate`` returns; null in a round that is not evaluated."""
        self.stop_on_divergence = stop_on_divergence
        """Stop when every update of a round is non-finite (simulation: the clients are the
        user's code). Over the network a client may lie, so it is only a rejection there."""
        self.eval_every = eval_every
        expected = {**global_state, **strategy.update_extras(global_state)}
        self.spec = UpdateSpec.of(expected, max_update_bytes)
        self._view_specs: dict[str, UpdateSpec] = {"": self.spec}
        """The update spec of each view a strategy keeps (one model per architecture)."""
        self.max_update_bytes = max_update_bytes
        self.weighting: Weighting = weighting or CappedClaims()
        """Whose numbers weight the updates; the default caps claims at 2x the median."""
        self._last_rejection: dict[str, str] = {}
        self.callbacks: list[RoundCallback] = []
        self.guards: list[RoundGuard] = []
        self.metric_sources: list[MetricSource] = []
        self.instructions: list[Instructions] = []
        """Per-client additions to a round's fit message (e.g. "evaluate first")."""
        self.observers: list[ReplyObserver] = []
        """See each accepted reply's meta (e.g. a client's evaluation); they must check
        it: it is the client's word."""
        self.update_observers: list[UpdateObserver] = []
        """See each accepted update as the server decoded it (e.g. its norm for tracking)."""
        self.phase: RoundPhase | None = None
        """Runs the round's exchanges instead of the plain fit exchange (None: plain)."""
        self.reduce: RoundReducer | None = None
        """Sums this rank's share of a round with the other ranks' (None: one process)."""
        self.round = 0
        self.stopped: str | None = None
        self.min_updates = min_updates
        """Fewest valid updates a round needs to change the model (networked min_clients)."""
        strategy.start(global_state)

    def run(self, rounds: int) -> Tensors:
        """Run rounds ``self.round + 1 .. rounds``; a resumed server continues where it was."""
        while self.round < rounds:
            reasons = [r for guard in self.guards if (r := guard(self.round + 1))]
            if reasons:
                self.stopped = "; ".join(reasons)
                log.warning("stopping before round %d: %s", self.round + 1, self.stopped)
                break
            metrics = self.run_round(self.round + 1, last=self.round + 1 == rounds)
            self.round += 1
            for callback in self.callbacks:
                callback(self, metrics)
        return self.global_state

    def run_round(self, rnd: int, last: bool = False) -> dict[str, Any]:
        start = time.perf_counter()
        sampled = [self.client_ids[k] for k in self.sampler.sample(rnd)]
        views = {cid: self.strategy.client_view(cid) for cid in sampled}
        payloads = self._payloads(rnd, set(views.values()))
        config = self.strategy.fit_config(rnd)
        extra: dict[str, dict[str, Any]] = {}
        for instruct in self.instructions:
            for cid, fields in instruct(rnd, sampled).items():
                extra.setdefault(cid, {}).update(fields)
        messages = {
            cid: Message(
                "fit",
                rnd,
                "server",
                payloads[views[cid]],
                {**config, **view_meta(views[cid]), **extra.get(cid, {})},
            )
            for cid in sampled
        }
        bytes_down = sum(frame_size(m) for m in messages.values())
        aggregator = self.weighting.wrap(self.strategy.new_aggregator(rnd))
        tally = RoundTally()
        replies = replies_of(self.transport, messages) if self.phase is None else iter(())
        if self.phase is not None:  # several exchanges, one aggregate (secure aggregation)
            aggregator = self.phase.collect(self, rnd, messages, tally)
        for item in replies:
            if isinstance(item, GroupReply):  # a vectorized group's rows, checked as tensors
                collect_group(self, rnd, item, aggregator, tally)
                continue
            cid, answer = item
            if (reply := tally.received(cid, answer)) is None:
                continue
            try:
                update, meta = self._decode(reply, rnd, cid)
                self.strategy.check_meta(cid, reply.meta)
                aggregator.add(cid, update, reply.meta)
            except UpdateRejected as why:
                tally.non_finite += isinstance(why, NonFinite)
                self._reject(rnd, cid, str(why), tally)
                continue
            self.accepted(rnd, cid, reply.meta, meta, partial(dict, update), tally)
        if self.reduce is not None:
            self.reduce(rnd, sampled, aggregator, tally)
        if self.stop_on_divergence:
            _check_not_diverged(rnd, aggregator.count, tally)
        if aggregator.count >= max(1, self.min_updates) or self.strategy.always_apply:
            previous = self.global_state
            saved = None if self.stop_on_divergence else _copied(self.strategy.state_dict())
            self.global_state = self.strategy.apply(self.global_state, aggregator.result())
            if not all(bool(torch.isfinite(t).all()) for t in self.global_state.values()):
                problem = f"the global model became non-finite in round {rnd}"
                if saved is None:
                    raise Diverged(f"{problem}: lower strategy.server_lr or train.lr")
                log.error("%s; the round is discarded, model and optimizer kept", problem)
                self.global_state = previous
                self.strategy.load_state_dict(*saved)
        else:
            log.warning(
                "round %d: %d valid update(s), %d needed; the global model is unchanged",
                rnd,
                aggregator.count,
                max(1, self.min_updates),
            )
        bytes_down += tally.bytes_down
        return self._metrics(rnd, last, aggregator.count, bytes_down, tally, start)

    def _payloads(self, rnd: int, names: set[str]) -> dict[str, bytes]:
        """The encoded weights of each view sent this round: one, the whole global state,
        unless the strategy keeps several models (``Strategy.views``)."""
        states = self.strategy.views(self.global_state)
        extras = self.strategy.downlink_extras()
        key = downlink_key(rnd)
        return {name: self.down.encode({**states[name], **extras}, key) for name in sorted(names)}

    def _spec(self, view: str) -> UpdateSpec:
        """What an update of ``view`` must hold (its shapes do not change between rounds)."""
        if view not in self._view_specs:
            state = self.strategy.views(self.global_state)[view]
            expected = {**state, **self.strategy.update_extras(state)}
            self._view_specs[view] = UpdateSpec.of(expected, self.max_update_bytes)
        return self._view_specs[view]

    def _decode(self, reply: Message, rnd: int, cid: str) -> tuple[Tensors, ReplyMeta]:
        """``check_reply``, where any other exception a hostile payload might still raise in
        a decoder is a rejection too (logged with its traceback): never a crashed server."""
        try:
            return check_reply(reply, rnd, cid, self._spec(self.strategy.client_view(cid)), self.up)
        except UpdateRejected:
            raise
        except Exception as error:
            log.exception("round %d: decoding the update from %s failed", rnd, client_ref(cid))
            raise UpdateRejected(f"undecodable update: {type(error).__name__}") from None

    def accepted(
        self,
        rnd: int,
        cid: str,
        raw_meta: Mapping[str, Any],
        meta: ReplyMeta,
        update: Callable[[], Tensors],
        tally: RoundTally,
    ) -> None:
        """What the round loop does after an accepted reply: observers see it (``update``
        is built only when one watches updates) and its loss enters the round's metric."""
        self._last_rejection.pop(cid, None)
        for observe in self.observers:
            observe(rnd, cid, raw_meta)
        if self.update_observers:
            shown = update()
            for watch in self.update_observers:
                watch(rnd, cid, shown)
        n = self.weighting.loss_weight(cid, meta.num_examples)
        if meta.train_loss is not None:
            tally.loss_sum += meta.train_loss * n
            tally.examples += n

    def _reject(self, rnd: int, cid: str, why: str, tally: RoundTally) -> None:
        """Count the rejection; log it unless it repeats the client's previous reason."""
        tally.rejected[cid] = why
        if self._last_rejection.get(cid) == why:
            log.debug("round %d: rejected update from %s again: %s", rnd, client_ref(cid), why)
        else:
            log.warning("round %d: rejected update from %s: %s", rnd, client_ref(cid), why)
        self._last_rejection[cid] = why

    def _metrics(
        self, rnd: int, last: bool, count: int, bytes_down: int, tally: RoundTally, start: float
    ) -> dict[str, Any]:
        tested: dict[str, Any] = dict.fromkeys(self.eval_keys)
        if self.evaluate is not None and (last or rnd % self.eval_every == 0):
            tested.update(self.evaluate(self.global_state))
        extra: dict[str, Any] = {}
        for source in self.metric_sources:
            extra.update(source(rnd))
        return {
            "round": rnd,
            **tested,
            "train_loss": tally.loss_sum / tally.examples if tally.examples else None,
            "num_clients": count,
            "num_failed": len(tally.failed),
            "num_rejected": len(tally.rejected),
            "bytes_up": tally.bytes_up,
            "bytes_down": bytes_down,
            "wall_s": time.perf_counter() - start,
            **extra,
        }
