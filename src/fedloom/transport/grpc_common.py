"""What both ends of the gRPC transport agree on: method names, metadata, chunking, options.

There is no .proto: both methods carry raw bytes (identity serializers). A Message travels
as one ``fedloom.transport.wire`` frame cut into chunks of at most ``chunk_bytes``, so a
model of several GB never meets gRPC's per-message limit. ``Pull`` answers with a small
JSON control record first (``{"status": "fit"|"idle"|"done", "size": n}``), then the chunks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fedloom.core.errors import UpdateRejected
from fedloom.core.message import Message
from fedloom.transport.wire import encode_message

SERVICE = "fedloom.Federation"
PULL = f"/{SERVICE}/Pull"
PUSH = f"/{SERVICE}/Push"
CLIENT_KEY = "fedloom-client"
TOKEN_KEY = "fedloom-token"
# room for gRPC's own framing around one chunk
_SLACK = 64 * 1024


@dataclass(frozen=True)
class Keepalive:
    interval_s: float = 20.0
    timeout_s: float = 10.0


def channel_options(chunk_bytes: int, keepalive: Keepalive) -> list[tuple[str, Any]]:
    """gRPC options for both ends: message limits just above a chunk, and keepalive pings."""
    limit = chunk_bytes + _SLACK
    return [
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
        ("grpc.keepalive_time_ms", int(keepalive.interval_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive.timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def server_options(chunk_bytes: int, keepalive: Keepalive) -> list[tuple[str, Any]]:
    # Accept the clients' pings however idle they are, and never share the port with a
    # stale process (Linux gRPC defaults to SO_REUSEPORT, which would hide a port clash).
    min_ping_ms = max(1000, int(keepalive.interval_s * 500))
    return [
        *channel_options(chunk_bytes, keepalive),
        ("grpc.http2.min_ping_interval_without_data_ms", min_ping_ms),
        ("grpc.http2.min_time_between_pings_ms", min_ping_ms),
        ("grpc.so_reuseport", 0),
        # Without these, gRPC grows each stream's receive window (BDP probing) to several
        # MB and buffers whole uploads from every client at once: server memory became
        # O(clients x model). A fixed 256 KiB window keeps waiting uploads in the clients.
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", 256 * 1024),
    ]


def frame_chunks(message: Message, chunk_bytes: int) -> Iterator[bytes]:
    """The frame of ``message`` in pieces, without first building the whole frame.

    The server sends the same global payload to every client; slicing it here means a
    round's downloads cost one model in memory, not one per client.
    """
    head = encode_message(Message(message.kind, message.round, message.sender, b"", message.meta))
    yield head
    if len(message.payload) <= chunk_bytes:
        yield message.payload  # the shared bytes object itself, no copy
        return
    view = memoryview(message.payload)
    for start in range(0, len(view), chunk_bytes):
        yield bytes(view[start : start + chunk_bytes])


def join_chunks(chunks: Iterable[bytes], limit: int) -> bytearray:
    """Reassemble a frame, refusing it as soon as it grows past ``limit`` bytes."""
    frame = bytearray()
    for chunk in chunks:
        if len(frame) + len(chunk) > limit:
            raise UpdateRejected(f"message exceeds the limit of {limit} bytes")
        frame += chunk
    return frame


def control(status: str, size: int = 0) -> bytes:
    return json.dumps({"status": status, "size": size}).encode()


def parse_control(data: bytes) -> tuple[str, int]:
    try:
        doc = json.loads(data)
        status, size = doc["status"], doc["size"]
    except (ValueError, KeyError, TypeError) as error:
        raise UpdateRejected(f"malformed control record from the server: {error}") from None
    if status not in ("fit", "idle", "done") or not isinstance(size, int) or size < 0:
        raise UpdateRejected(f"unexpected control record {doc!r}")
    return status, size


def identity(data: bytes) -> bytes:
    return data
