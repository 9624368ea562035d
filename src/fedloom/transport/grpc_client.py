"""The client end of the gRPC transport: one channel, long-poll for work, stream updates back."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import grpc

from fedloom.core.errors import UpdateRejected
from fedloom.core.message import Message
from fedloom.transport.grpc_common import (
    CLIENT_KEY,
    PROTOCOL_VERSION,
    PULL,
    PUSH,
    SIZE_KEY,
    TOKEN_KEY,
    VERSION_KEY,
    Keepalive,
    channel_options,
    frame_chunks,
    identity,
    join_chunks,
    parse_control,
)
from fedloom.transport.wire import decode_message, frame_size


@dataclass(frozen=True)
class ClientTls:
    ca_pem: bytes
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    server_name: str | None = None


@dataclass(frozen=True)
class GrpcClientSettings:
    address: str
    client_id: str
    token: str
    poll_s: float = 10.0
    chunk_bytes: int = 1 << 20
    max_message_bytes: int = 4 << 30
    keepalive: Keepalive = field(default_factory=Keepalive)
    tls: ClientTls | None = None
    push_timeout_s: float = 600.0
    reconnect_max_s: float = 5.0
    """Cap on gRPC's own reconnection backoff (its default, 120 s, would leave a client
    deaf long after a restarted server is back)."""


class GrpcClientChannel:
    """``pull()`` -> ("fit", Message) | ("idle" | "done" | "retry", None); ``push(reply)``."""

    def __init__(self, settings: GrpcClientSettings) -> None:
        self.settings = settings
        options = channel_options(settings.chunk_bytes, settings.keepalive)
        backoff_ms = int(settings.reconnect_max_s * 1000)
        options += [
            ("grpc.initial_reconnect_backoff_ms", min(250, backoff_ms)),
            ("grpc.min_reconnect_backoff_ms", min(250, backoff_ms)),
            ("grpc.max_reconnect_backoff_ms", backoff_ms),
        ]
        tls = settings.tls
        if tls is None:
            self._channel = grpc.insecure_channel(settings.address, options=options)
        else:
            if tls.server_name:
                options.append(("grpc.ssl_target_name_override", tls.server_name))
            creds = grpc.ssl_channel_credentials(tls.ca_pem, tls.key_pem, tls.cert_pem)
            self._channel = grpc.secure_channel(settings.address, creds, options=options)
        self._pull = self._channel.unary_stream(
            PULL, request_serializer=identity, response_deserializer=identity
        )
        self._push = self._channel.stream_unary(
            PUSH, request_serializer=identity, response_deserializer=identity
        )
        self._metadata = (
            (CLIENT_KEY, settings.client_id),
            (TOKEN_KEY, settings.token),
            (VERSION_KEY, str(PROTOCOL_VERSION)),
        )

    def pull(self) -> tuple[str, Message | None]:
        # the server holds a poll for poll_s; the rest of the call is the download, which
        # for a large model takes as long as an upload may
        stream: Iterator[bytes] = self._pull(
            b"",
            timeout=self.settings.poll_s + self.settings.push_timeout_s,
            metadata=self._metadata,
        )
        first = next(stream, None)
        if first is None:
            raise UpdateRejected("the server closed the poll without a control record")
        status, size = parse_control(first)
        if status != "fit":
            return status, None
        if size > self.settings.max_message_bytes:
            raise UpdateRejected(f"work of {size} bytes exceeds max_message_bytes")
        frame = join_chunks(stream, size, size)  # one buffer of the announced size
        return status, decode_message(frame)

    def push(self, message: Message) -> tuple[bool, str]:
        chunks = frame_chunks(message, self.settings.chunk_bytes)
        return self.push_chunks(chunks, frame_size(message))

    def push_chunks(self, chunks: Iterable[bytes], size: int | None = None) -> tuple[bool, str]:
        """Stream one frame, already cut in chunks; returns (accepted, the server's reason).

        ``size``, the frame's length, lets the server refuse an oversized frame unread and
        receive it into one buffer; without it the server grows its buffer as chunks come.
        """
        metadata = self._metadata if size is None else (*self._metadata, (SIZE_KEY, str(size)))
        answer = self._push(iter(chunks), timeout=self.settings.push_timeout_s, metadata=metadata)
        try:
            doc = json.loads(answer)
            return bool(doc["accepted"]), str(doc.get("reason", ""))
        except (ValueError, KeyError, TypeError):
            return False, f"unreadable answer from the server: {answer[:80]!r}"

    def close(self) -> None:
        self._channel.close()
