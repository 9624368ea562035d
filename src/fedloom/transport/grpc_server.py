"""The server end of the gRPC transport: clients pull their work and push their updates.

``exchange`` opens a round by putting one fit Message per sampled client in a mailbox;
each client's long-poll ``Pull`` takes its own, and its ``Push`` hands the update back.
Updates are yielded to the round loop as they arrive. At most ``max_inflight`` of them
are held at once (a Push waits for a slot before reading its stream), so the server's
memory is a few models whatever the number of clients. The round ends when every sampled
client answered or the deadline passed; the missing ones are reported as ``Failure``.

Identity is the authenticated one: the client id whose token matched, never a header.
The token is checked by ``grpc_guard.TokenGate`` before gRPC reads any request; each
upload is bounded by ``upload_limit`` (derived from the model by ``serve``) and watched by
an ``UploadWatchdog`` that cuts a sender slower than ``min_upload_rate``.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from fedloom.core.clientref import client_ref
from fedloom.core.errors import UpdateRejected
from fedloom.core.message import Message
from fedloom.transport.base import Failure, Reply
from fedloom.transport.grpc_common import (
    PROTOCOL_VERSION,
    SERVICE,
    SIZE_KEY,
    Keepalive,
    caller_version,
    check_protocol,
    control,
    frame_chunks,
    identity,
    join_chunks,
    server_options,
)
from fedloom.transport.grpc_guard import (
    CallCaps,
    RefusalLog,
    TokenGate,
    UploadWatchdog,
    claimed_identity,
    verify,
)
from fedloom.transport.wire import decode_message, frame_size

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerTls:
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes | None = None
    require_client_cert: bool = False


@dataclass(frozen=True)
class GrpcServerSettings:
    address: str
    tokens: Mapping[str, str]
    """client id -> secret token; any other caller is refused."""
    deadline_s: float = 120.0
    poll_s: float = 10.0
    chunk_bytes: int = 1 << 20
    max_message_bytes: int = 4 << 30
    """Largest frame sent, and the outer cap on an upload."""
    max_upload_bytes: int | None = None
    """Largest upload accepted (None: ``max_message_bytes``); ``serve`` derives it from the
    model and the uplink codec."""
    min_upload_rate: float = 64 * 1024
    """Bytes/s an upload must average (after ``upload_grace_s``) or it is cancelled."""
    upload_grace_s: float = 10.0
    max_calls_per_client: int = 4
    """Calls one authenticated client may have open at once (it needs a pull and a push)."""
    max_calls_per_host: int = 64
    """Calls one peer host may have open at once, whichever clients it speaks for."""
    max_inflight: int = 4
    keepalive: Keepalive = field(default_factory=Keepalive)
    tls: ServerTls | None = None
    port_file: str | None = None
    max_workers: int = 64
    min_clients: int = 1
    """Clients a resumed run waits for (up to ``startup_timeout_s``) before going on."""
    wait_for_clients: int = 1
    """Distinct clients ``await_clients`` waits for before the first round."""
    startup_timeout_s: float = 600.0
    """Longest wait for clients before the first round."""
    resume_wait_s: float = 30.0
    """How long a resumed run waits for ``wait_for_clients`` (beyond ``min_clients``)."""
    lowest_protocol: int = 2
    """Oldest protocol version a client may speak (a secure round needs 3)."""


@dataclass
class _Round:
    number: int
    mailbox: dict[str, Message]
    """Fit messages not yet answered; a client that re-polls gets its own again."""
    expected: frozenset[str]
    deadline: float
    """``time.monotonic()`` at which the round closes."""

    def awaits(self, cid: str) -> bool:
        """``cid`` was sampled and has not answered yet."""
        return cid in self.mailbox

    def time_left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


WAKE_S = 0.5
"""The longest the round loop's thread blocks at once. The OS may deliver SIGTERM to any
thread, gRPC's included; Python then runs its handler only when the main thread next
wakes, so a wait as long as a round's deadline would hold off a stop for that long."""


class GrpcServerTransport:
    def __init__(self, settings: GrpcServerSettings) -> None:
        self.settings = settings
        self._tokens = {cid: token.encode() for cid, token in settings.tokens.items()}
        self._refusals = RefusalLog()
        self._caps = CallCaps(settings.max_calls_per_client, settings.max_calls_per_host)
        self.upload_limit = min(
            settings.max_upload_bytes or settings.max_message_bytes, settings.max_message_bytes
        )
        """Largest upload frame read; a larger one is refused unread (or as it grows)."""
        self._cond = threading.Condition()
        self._round: _Round | None = None
        self._done = False
        self._final = "done"
        """What polling clients hear once the server stops: "done", or "retry" (not over)."""
        self._replies: queue.Queue[tuple[str, Message]] = queue.Queue()
        self._slots = threading.BoundedSemaphore(settings.max_inflight)
        # gRPC copies each chunk it sends: bound how many downloads run at once
        self._downloads = threading.BoundedSemaphore(2 * settings.max_inflight)
        self._busy: set[tuple[str, str]] = set()
        """(client, "pull" | "push") transfers under way: one of each per client at a time,
        so one client cannot hold every download or upload slot."""
        self._server: grpc.Server | None = None
        self._seen: set[str] = set()
        self.port: int | None = None
        self.uploads_reading = 0
        """Uploads holding a slot and being read right now (for tests and monitoring)."""

    @property
    def refused(self) -> int:
        """Calls refused for a bad identity or token (for tests and monitoring)."""
        return self._refusals.total

    def open_calls(self, cid: str) -> int:
        """Calls of client ``cid`` being served right now (for tests and monitoring)."""
        return self._caps.open_calls(cid)

    def limit_uploads(self, max_bytes: int) -> None:
        """Accept uploads of at most ``max_bytes`` (never above ``max_message_bytes``)."""
        self.upload_limit = min(max_bytes, self.settings.max_message_bytes)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> int:
        """Bind and serve (idempotent); returns the bound port."""
        if self._server is not None:
            return self.port or 0
        s = self.settings
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=s.max_workers, thread_name_prefix="fl-grpc"),
            options=server_options(s.chunk_bytes, s.keepalive),
            maximum_concurrent_rpcs=s.max_workers,  # beyond it: RESOURCE_EXHAUSTED, not a queue
            interceptors=(TokenGate(self._tokens, self._refusals),),
        )
        handlers = {
            "Pull": grpc.unary_stream_rpc_method_handler(
                self._pull, request_deserializer=identity, response_serializer=identity
            ),
            "Push": grpc.stream_unary_rpc_method_handler(
                self._push, request_deserializer=identity, response_serializer=identity
            ),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        if s.tls is not None:
            creds = grpc.ssl_server_credentials(
                [(s.tls.key_pem, s.tls.cert_pem)],
                root_certificates=s.tls.ca_pem,
                require_client_auth=s.tls.require_client_cert,
            )
            port = server.add_secure_port(s.address, creds)
        else:
            port = server.add_insecure_port(s.address)
        if port == 0:
            raise OSError(f"cannot listen on {s.address} (address in use or invalid)")
        server.start()
        self._server, self.port = server, port
        host = s.address.rsplit(":", 1)[0]
        if s.port_file:
            tmp = Path(s.port_file).with_suffix(".tmp")
            tmp.write_text(f"{host}:{port}\n")
            tmp.replace(s.port_file)
        log.info("serving on %s:%d (%s)", host, port, "TLS" if s.tls else "plaintext")
        return port

    def finish(self, linger_s: float, status: str = "done") -> None:
        """Tell polling clients ``status`` ("done": the run is over; "retry": the server is
        stopping early, poll again), give them ``linger_s`` to hear it, stop."""
        with self._cond:
            self._done, self._final = True, status
            self._cond.notify_all()
        if self._server is not None:
            time.sleep(linger_s)
            self._server.stop(grace=1.0).wait()
            self._server = None

    # -- the round -----------------------------------------------------------------------

    def exchange(self, messages: Mapping[str, Message]) -> Iterator[Reply]:
        self.start()
        if not messages:
            return
        number = next(iter(messages.values())).round
        current = _Round(
            number, dict(messages), frozenset(messages), time.monotonic() + self.settings.deadline_s
        )
        with self._cond:
            self._round = current
            self._cond.notify_all()
        pending = set(messages)
        try:
            while pending:
                try:
                    cid, reply = self._replies.get(timeout=min(current.time_left(), WAKE_S))
                except queue.Empty:
                    if current.time_left() > 0:
                        continue
                    break
                pending.discard(cid)
                try:
                    yield cid, reply
                finally:
                    self._slots.release()  # the round loop has folded it in; free the slot
            # close the round first: an upload finishing now is refused, not accepted and lost
            self._close_round()
            for cid in sorted(pending):
                log.warning("round %d: %s missed the deadline", number, client_ref(cid))
                yield cid, Failure(cid, f"no update within {self.settings.deadline_s:g} s")
        finally:
            self._close_round()

    def await_clients(self, resumed: bool) -> int:
        """Before the first round, give clients time to connect, so the round's deadline is
        not spent on their start-up; returns how many have.

        A fresh run waits up to ``startup_timeout_s`` for ``wait_for_clients``. A resumed run
        (a restarted server) waits for them only ``resume_wait_s``, because some may have
        died while it was down, then goes on as soon as ``min_clients`` are back (waiting
        for those up to ``startup_timeout_s``). Either way it then starts with whoever is
        connected, and logs it when that is fewer than ``wait_for_clients``.
        """
        s = self.settings
        started = time.monotonic()
        patience = s.resume_wait_s if resumed else s.startup_timeout_s
        if not self._wait_seen(s.wait_for_clients, started + patience) and resumed:
            self._wait_seen(s.min_clients, started + s.startup_timeout_s)
        with self._cond:
            connected = len(self._seen)
        if connected < s.wait_for_clients:
            log.warning(
                "%s with %d of %d clients connected after %.3g s",
                "resuming" if resumed else "starting",
                connected,
                s.wait_for_clients,
                time.monotonic() - started,
            )
        return connected

    def _wait_seen(self, count: int, deadline: float) -> bool:
        """Wait until ``count`` distinct clients have called in or ``deadline`` passed."""
        with self._cond:
            while len(self._seen) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, WAKE_S))  # WAKE_S: a signal's handler can run
            return True

    def _close_round(self) -> None:
        with self._cond:
            self._round = None
        while True:  # updates accepted just before the deadline fired
            try:
                cid, _ = self._replies.get_nowait()
            except queue.Empty:
                return
            self._slots.release()
            log.warning("%s: update arrived after the round closed; dropped", client_ref(cid))

    # -- RPC handlers --------------------------------------------------------------------

    def _authenticate(self, context: grpc.ServicerContext) -> str:
        """The caller's client id. ``TokenGate`` let only valid tokens through; checking
        again costs a microsecond and keeps a handler safe without the interceptor."""
        cid, token = claimed_identity(context.invocation_metadata())
        if not verify(self._tokens, cid, token):
            self._refusals.refused(context.peer(), cid, "bad token")
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown client or bad token")
        version_problem = check_protocol(
            context.invocation_metadata() or (), self.settings.lowest_protocol
        )
        if version_problem is not None:
            log.warning("refused %s: %s", client_ref(cid), version_problem)
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, version_problem)
        with self._cond:
            if cid not in self._seen:
                self._seen.add(cid)
                self._cond.notify_all()
        return cid

    def _pull(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        cid = self._authenticate(context)
        with self._caps.admit(cid, context.peer()) as refusal:
            if refusal is not None:
                log.warning("refused a poll: %s", refusal)
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
            yield from self._serve_pull(cid, context)

    def _serve_pull(self, cid: str, context: grpc.ServicerContext) -> Iterator[bytes]:
        # answered in the caller's version: records are alike in every version it may speak
        version = caller_version(context.invocation_metadata() or ()) or PROTOCOL_VERSION
        with self._cond:
            self._cond.wait_for(
                lambda: self._done or self._work_for(cid) is not None, timeout=self.settings.poll_s
            )
            current, work, done = self._round, self._work_for(cid), self._done
            claimed = work is not None and self._claim(cid, "pull")
        if current is None or work is None or not claimed:
            # nothing (or being sent): poll again
            yield control(self._final if done else "idle", version=version)
            return
        try:
            if not self._downloads.acquire(timeout=min(self.settings.poll_s, current.time_left())):
                yield control("idle", version=version)  # busy: the client simply polls again
                return
            # a client that stops reading must not hold a download slot past the round
            with _cancel_after(current.time_left(), context):
                try:
                    yield control("fit", frame_size(work), version)
                    yield from frame_chunks(work, self.settings.chunk_bytes)
                finally:
                    self._downloads.release()
        finally:
            self._release(cid, "pull")

    def _work_for(self, cid: str) -> Message | None:
        return self._round.mailbox.get(cid) if self._round is not None else None

    def _push(self, chunks: Iterable[bytes], context: grpc.ServicerContext) -> bytes:
        cid = self._authenticate(context)
        with self._caps.admit(cid, context.peer()) as refusal:
            if refusal is not None:
                return _refuse(cid, refusal)
            return self._serve_push(cid, chunks, context)

    def _serve_push(
        self, cid: str, chunks: Iterable[bytes], context: grpc.ServicerContext
    ) -> bytes:
        try:
            size = _announced_size(context)
        except UpdateRejected as why:
            return _refuse(cid, str(why))
        with self._cond:  # refuse before reading anything: only an awaited answer is read
            current = self._round
            if current is None or cid not in current.expected:
                return _refuse(cid, "this client was not asked for an update now")
            if not current.awaits(cid):
                return _refuse(cid, f"this client already answered round {current.number}")
            if size is not None and size > self.upload_limit:
                limit = self.upload_limit
                return _refuse(cid, f"update of {size} bytes exceeds the limit of {limit} bytes")
            if not self._claim(cid, "push"):
                return _refuse(cid, "this client is already uploading")
        handed_over = False
        try:
            if not self._slots.acquire(timeout=current.time_left()):
                return _refuse(cid, "server busy until the round closed")
            try:
                message = self._receive(cid, chunks, size, current, context)
                self._hand_over(cid, message)
                handed_over = True
                return _answer(True)
            except UpdateRejected as why:
                return _refuse(cid, str(why))
            finally:
                if not handed_over:
                    self._slots.release()
        finally:
            self._release(cid, "push")

    def _receive(
        self,
        cid: str,
        chunks: Iterable[bytes],
        size: int | None,
        current: _Round,
        context: grpc.ServicerContext,
    ) -> Message:
        """Read and decode one upload, cut if it stalls or outlives the round."""
        s = self.settings
        watchdog = UploadWatchdog(context.cancel, s.min_upload_rate, s.upload_grace_s)
        with self._cond:
            self.uploads_reading += 1
            self._cond.notify_all()
        try:
            # a client that stalls mid-stream must not hold a slot past the round
            with _cancel_after(current.time_left(), context), watchdog:
                frame = join_chunks(chunks, self.upload_limit, size, watchdog.progress)
        except (grpc.RpcError, UpdateRejected) as error:  # cancelled under us: say why
            if watchdog.stalled is not None:
                raise UpdateRejected(f"upload stalled: {watchdog.stalled}; cancelled") from None
            if isinstance(error, UpdateRejected):
                raise
            raise UpdateRejected("upload cancelled: the round closed or the client left") from None
        finally:
            with self._cond:
                self.uploads_reading -= 1
                self._cond.notify_all()
        if watchdog.stalled is not None:  # the cut stream may have ended as if complete
            raise UpdateRejected(f"upload stalled: {watchdog.stalled}; cancelled")
        return decode_message(frame)

    def _claim(self, cid: str, kind: str) -> bool:
        """Mark a transfer of ``cid`` under way (call holding ``_cond``); False if one is."""
        if (cid, kind) in self._busy:
            return False
        self._busy.add((cid, kind))
        return True

    def _release(self, cid: str, kind: str) -> None:
        with self._cond:
            self._busy.discard((cid, kind))

    def _hand_over(self, cid: str, message: Message) -> None:
        """Queue ``message`` as ``cid``'s reply if it answers the open round, once."""
        with self._cond:
            current = self._round
            if current is None or cid not in current.expected:
                raise UpdateRejected("this client was not asked for an update now")
            if message.round != current.number:
                raise UpdateRejected(
                    f"update is for round {message.round}, the server is in round {current.number}"
                )
            if not current.awaits(cid):
                raise UpdateRejected(f"this client already answered round {current.number}")
            del current.mailbox[cid]
            self._replies.put((cid, message))


def _announced_size(context: grpc.ServicerContext) -> int | None:
    """The frame size a client announced in its metadata (older clients do not)."""
    for key, value in context.invocation_metadata() or ():
        if key == SIZE_KEY:
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            if not (text.isascii() and text.isdigit()) or len(text) > 20:
                raise UpdateRejected(f"{SIZE_KEY} must be a byte count, got {text[:24]!r}")
            return int(text)
    return None


def _answer(accepted: bool, reason: str = "") -> bytes:
    return json.dumps({"accepted": accepted, "reason": reason}).encode()


def _refuse(cid: str, reason: str) -> bytes:
    log.warning("rejected message from %s: %s", client_ref(cid), reason)
    return _answer(False, reason)


@contextmanager
def _cancel_after(seconds: float, context: grpc.ServicerContext) -> Iterator[None]:
    """Cancel the RPC if the block has not finished within ``seconds``."""
    timer = threading.Timer(seconds, context.cancel)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
