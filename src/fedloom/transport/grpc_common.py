"""What both ends of the gRPC transport agree on: method names, metadata, chunking, options.

There is no .proto: both methods carry raw bytes (identity serializers). A Message travels
as one ``fedloom.transport.wire`` frame cut into chunks of at most ``chunk_bytes``, so a
model of several GB never meets gRPC's per-message limit. ``Pull`` answers with a small
JSON control record first (``{"v": 3, "status": "fit"|"idle"|"done"|"retry", "size": n}``),
then the chunks. Every call carries the client's protocol version in its metadata
(``fedloom-protocol``); the server refuses one it does not speak.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fedloom.core.errors import FedloomError, UpdateRejected
from fedloom.core.message import Message, payload_bytes
from fedloom.transport.wire import encode_message

SERVICE = "fedloom.Federation"
PULL = f"/{SERVICE}/Pull"
PUSH = f"/{SERVICE}/Push"
CLIENT_KEY = "fedloom-client"
TOKEN_KEY = "fedloom-token"
VERSION_KEY = "fedloom-protocol"
"""Call metadata: the protocol version the caller speaks (absent: version 1)."""
PROTOCOL_VERSION = 3
"""1: control records without a version, statuses fit/idle/done. 2: versioned control
records, the ``retry`` status, and the caller's version in its metadata. 3: the messages
of a secure round (kinds ``secagg``, ``secagg_result``, ``ckks_result``) besides fits."""
SUPPORTED_VERSIONS = frozenset({2, 3})
"""Versions this side speaks; records and frames are the same in both, version 3 adds
the secure round's message kinds, which a secure server requires."""
SECURE_VERSION = 3
"""The lowest version a secure round (``secure.mode``) accepts."""
STATUSES = ("fit", "idle", "done", "retry")
"""``retry``: the server is stopping before the run is over; poll again (it will be back)."""
SIZE_KEY = "fedloom-frame-size"
"""Optional upload metadata: the frame's exact size, so the server can refuse an oversized
upload before reading it and receive the rest into one buffer of the right size."""


class ProtocolMismatch(FedloomError):
    """The two ends speak different protocol versions; retrying will not help."""


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
        yield payload_bytes(message.payload)  # a shared bytes object itself, no copy
        return
    view = memoryview(message.payload)
    for start in range(0, len(view), chunk_bytes):
        yield bytes(view[start : start + chunk_bytes])


def join_chunks(
    chunks: Iterable[bytes],
    limit: int,
    size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> bytearray | memoryview:
    """Reassemble a frame, refusing it as soon as it grows past ``limit`` bytes.

    With the frame's ``size`` known in advance the buffer is allocated once, at that size
    (growing a bytearray over-allocates and copies as it goes), and placed so that what
    follows the first chunk (the frame's header, as ``frame_chunks`` sends it) starts on
    an 8-byte boundary: the payload's tensors can then be used in place. A stream that
    ends short of ``size`` or runs past it is refused. ``progress`` hears each chunk's length.
    """
    if size is None:
        frame = bytearray()
        for chunk in chunks:
            if len(frame) + len(chunk) > limit:
                raise UpdateRejected(f"message exceeds the limit of {limit} bytes")
            frame += chunk
            if progress is not None:
                progress(len(chunk))
        return frame
    if size > limit:
        raise UpdateRejected(f"message of {size} bytes exceeds the limit of {limit} bytes")
    stream = iter(chunks)
    first = next(stream, b"")
    pad = -len(first) % 8
    placed, filled = memoryview(bytearray(pad + size))[pad:], 0
    for chunk in itertools.chain((first,), stream):
        end = filled + len(chunk)
        if end > size:
            raise UpdateRejected(f"message runs past its announced {size} bytes")
        placed[filled:end] = chunk
        filled = end
        if progress is not None:
            progress(len(chunk))
    if filled != size:
        raise UpdateRejected(f"message truncated: {filled} of {size} bytes")
    return placed


def control(status: str, size: int = 0, version: int = PROTOCOL_VERSION) -> bytes:
    """A control record, in ``version``: the one the calling client speaks."""
    return json.dumps({"v": version, "status": status, "size": size}).encode()


def parse_control(data: bytes) -> tuple[str, int]:
    try:
        doc = json.loads(data)
        version = doc.get("v", 1)
        status, size = doc["status"], doc["size"]
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise UpdateRejected(f"malformed control record from the server: {error}") from None
    if version not in SUPPORTED_VERSIONS:
        raise ProtocolMismatch(
            f"the server speaks protocol {str(version)[:20]}, this client speaks "
            f"{PROTOCOL_VERSION}: upgrade the older side"
        )
    if status not in STATUSES or type(size) is not int or size < 0:
        raise UpdateRejected(f"unexpected control record {str(doc)[:200]}")
    return status, size


def caller_version(metadata: Iterable[tuple[str, Any]]) -> int | None:
    """The protocol version a call's metadata claims (absent: 1), None if unreadable."""
    claimed = dict(metadata).get(VERSION_KEY, "1")
    version = claimed if isinstance(claimed, str) else "?"
    short_number = len(version) <= 4 and version.isascii() and version.isdigit()
    return int(version) if short_number else None


def check_protocol(metadata: Iterable[tuple[str, Any]], lowest: int = 2) -> str | None:
    """Why a call with this metadata cannot be served (its protocol version), or None.
    ``lowest``: the oldest version this server's run accepts (3 for a secure round)."""
    version = caller_version(metadata)
    accepted = sorted(v for v in SUPPORTED_VERSIONS if v >= lowest)
    if version in accepted:
        return None
    claimed = dict(metadata).get(VERSION_KEY, "1")
    shown = claimed[:20] if isinstance(claimed, str) else "?"
    speaks = " or ".join(map(str, accepted))
    why = " (secure aggregation needs it)" if lowest >= SECURE_VERSION else ""
    return f"client speaks protocol {shown}, this server speaks {speaks}{why}"


def is_loopback(address: str) -> bool:
    """``address`` (``host:port``) is on this machine: 127.0.0.0/8, ::1 or ``localhost``."""
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def identity(data: bytes) -> bytes:
    return data
