"""What stands between the network and the gRPC handlers: the token check, call caps, and
the upload watchdog.

``TokenGate`` is a server interceptor. gRPC runs it with the call's metadata *before* it
reads any request message, so a caller without a valid token is answered UNAUTHENTICATED
by a request-streaming handler that never reads its requests: a half-open call (a request
never sent) costs one short task of the thread pool, never a thread held while gRPC waits
for the body. Refusals are counted and logged at most ``burst`` times per peer host per
``window_s`` seconds, with the running count, so a flood cannot flood the log either.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc

from fedloom.transport.grpc_common import CLIENT_KEY, TOKEN_KEY, check_protocol

log = logging.getLogger("fedloom.transport.grpc_server")

_NO_TOKEN = b"\0" * 32


def peer_host(peer: str) -> str:
    """``ipv4:10.0.0.7:51234`` -> ``ipv4:10.0.0.7``; ``ipv6:[::1]:5`` -> ``ipv6:[::1]``."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        return f"{kind}:{rest.rsplit(':', 1)[0]}"
    return peer


def claimed_identity(metadata: Any) -> tuple[str, bytes]:
    """(client id, token) as the call's metadata claims them; empty when absent."""
    meta = {str(k): v for k, v in metadata or ()}
    cid, token = meta.get(CLIENT_KEY, ""), meta.get(TOKEN_KEY, "")
    cid = cid.decode(errors="replace") if isinstance(cid, bytes) else str(cid)
    return cid, token if isinstance(token, bytes) else str(token).encode()


def verify(tokens: Mapping[str, bytes], cid: str, token: bytes) -> bool:
    """Constant-time token check; unknown ids are compared too, so timing hides them."""
    expected = tokens.get(cid)
    ok = hmac.compare_digest(token, expected if expected is not None else _NO_TOKEN)
    return expected is not None and ok


@dataclass
class RefusalLog:
    """Counts refused calls; logs at most ``burst`` of them per host per ``window_s``."""

    window_s: float = 10.0
    burst: int = 5
    max_hosts: int = 10_000
    total: int = 0
    by_host: Counter[str] = field(default_factory=Counter)
    _logged: dict[str, tuple[float, int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def refused(self, peer: str, cid: str, reason: str) -> None:
        host, now = peer_host(peer), time.monotonic()
        with self._lock:
            self.total += 1
            if len(self.by_host) >= self.max_hosts and host not in self.by_host:
                self.by_host.clear()  # a spray of addresses must not grow memory forever
                self._logged.clear()
            self.by_host[host] += 1
            since, count = self._logged.get(host, (now, 0))
            if now - since >= self.window_s:
                since, count = now, 0
            self._logged[host] = (since, count + 1)
            if count >= self.burst:
                return
            seen, total = self.by_host[host], self.total
        quiet = " (further refusals from this host are counted, logged at most "
        log.warning(
            "refused %s claiming client %r: %s; %d refused from %s, %d in all%s",
            peer,
            cid[:64],
            reason,
            seen,
            host,
            total,
            f"{quiet}{self.burst} per {self.window_s:g} s)" if count + 1 == self.burst else "",
        )


class TokenGate(grpc.ServerInterceptor):
    """Lets a call reach its handler only when its client id and token match and it speaks
    a protocol version this server supports."""

    def __init__(self, tokens: Mapping[str, bytes], refusals: RefusalLog) -> None:
        self._tokens = tokens
        self._refusals = refusals
        self._refuse = grpc.stream_stream_rpc_method_handler(self._abort)
        self._refuse_version = grpc.stream_stream_rpc_method_handler(self._abort_version)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        cid, token = claimed_identity(details.invocation_metadata)
        if not verify(self._tokens, cid, token):
            # request-streaming, so gRPC hands over an iterator instead of reading a body
            return self._refuse
        if check_protocol(details.invocation_metadata or ()) is not None:
            return self._refuse_version
        return continuation(details)  # None for an unknown method: UNIMPLEMENTED at once

    def _abort(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> NoReturn:
        cid, _ = claimed_identity(context.invocation_metadata())
        self._refusals.refused(context.peer(), cid, "bad token")
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown client or bad token")
        raise AssertionError("unreachable: abort raises")

    def _abort_version(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> NoReturn:
        cid, _ = claimed_identity(context.invocation_metadata())
        why = check_protocol(context.invocation_metadata() or ()) or "unsupported protocol"
        self._refusals.refused(context.peer(), cid, why)
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, why)
        raise AssertionError("unreachable: abort raises")


class CallCaps:
    """At most ``per_client`` calls of one client and ``per_host`` of one host at a time."""

    def __init__(self, per_client: int, per_host: int) -> None:
        self.per_client, self.per_host = per_client, per_host
        self._clients: Counter[str] = Counter()
        self._hosts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def open_calls(self, cid: str) -> int:
        with self._lock:
            return self._clients[cid]

    @contextmanager
    def admit(self, cid: str, peer: str) -> Iterator[str | None]:
        """Yields None when admitted, else why not (and then holds nothing)."""
        host = peer_host(peer)
        with self._lock:
            if self._clients[cid] >= self.per_client:
                refusal: str | None = f"client {cid} has {self.per_client} calls open"
            elif self._hosts[host] >= self.per_host:
                refusal = f"{host} has {self.per_host} calls open"
            else:
                refusal = None
                self._clients[cid] += 1
                self._hosts[host] += 1
        if refusal is not None:
            yield refusal
            return
        try:
            yield None
        finally:
            with self._lock:
                self._clients[cid] -= 1
                self._hosts[host] -= 1
                self._clients += Counter()  # drop the zero counts
                self._hosts += Counter()


class UploadWatchdog:
    """Cancels an upload whose average rate, after ``grace_s``, falls below ``rate``.

    After ``received`` bytes the upload is on time until ``grace_s + received / rate``
    seconds from its start; a timer checks exactly then, and re-arms while bytes come."""

    def __init__(self, cancel: Callable[[], None], rate: float, grace_s: float) -> None:
        self._cancel, self.rate, self.grace_s = cancel, rate, grace_s
        self._start = time.monotonic()
        self.received = 0
        self.stalled: str | None = None
        """Why the upload was cut, once it was."""
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._stopped = False

    def progress(self, nbytes: int) -> None:
        self.received += nbytes  # read by the timer thread; a stale read only re-arms it

    def __enter__(self) -> UploadWatchdog:
        self._arm()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._stopped = True
            if self._timer is not None:
                self._timer.cancel()

    def _due(self) -> float:
        return self._start + self.grace_s + self.received / self.rate

    def _arm(self) -> None:
        with self._lock:
            if self._stopped:
                return
            delay = max(0.05, self._due() - time.monotonic())
            self._timer = threading.Timer(delay, self._check)
            self._timer.daemon = True
            self._timer.start()

    def _check(self) -> None:
        if time.monotonic() < self._due():
            self._arm()
            return
        with self._lock:
            if self._stopped:
                return
            elapsed = time.monotonic() - self._start
            self.stalled = (
                f"{self.received} bytes in {elapsed:.3g} s, below the minimum of "
                f"{self.rate:g} B/s after {self.grace_s:g} s of grace"
            )
        self._cancel()
