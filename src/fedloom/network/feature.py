"""``grpc_feature``: when ``network.mode == "grpc"``, the run's transport is gRPC.

It swaps ``parts.transport``; the simulated handlers the factory is given are not used.
Everything else in the federation (strategy, codecs, hooks, checkpoints) is unchanged.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fedloom.core.codec import max_encoded_bytes
from fedloom.core.errors import ConfigError
from fedloom.core.files import read_json
from fedloom.core.tensors import state_of
from fedloom.network.config import NetworkConfig, read_file
from fedloom.parts import Parts
from fedloom.server.validate import UpdateSpec
from fedloom.transport.grpc_common import SECURE_VERSION
from fedloom.transport.inprocess import Handler

log = logging.getLogger(__name__)

UPLOAD_HEADROOM = 64 * 1024
"""Room above the encoded update for the frame's JSON header (kind, round, meta)."""

if TYPE_CHECKING:  # grpcio is an optional extra: import it only when a run uses it
    import torch

    from fedloom.transport.grpc_server import GrpcServerSettings, GrpcServerTransport


def load_tokens(path: str | Path) -> dict[str, str]:
    """A tokens file: a JSON object mapping client ids to their secret tokens."""
    doc = read_json(path, "network.tokens_file")
    if not isinstance(doc, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and len(v) >= 16 for k, v in doc.items()
    ):
        raise ConfigError(
            [f"network.tokens_file: {path} must map client ids to tokens of >= 16 characters"]
        )
    return doc


def server_settings(net: NetworkConfig, client_ids: Sequence[str]) -> GrpcServerSettings:
    from fedloom.transport.grpc_server import GrpcServerSettings, ServerTls

    if net.tokens_file is None:
        raise ConfigError(["network.tokens_file is required: every client must authenticate"])
    tokens = load_tokens(net.tokens_file)
    unknown = sorted(set(tokens) - set(client_ids))
    if unknown:
        raise ConfigError([f"network.tokens_file names clients not in the run: {unknown[:5]}"])
    missing = sorted(set(client_ids) - set(tokens), key=_numeric_first)
    if missing:
        log.warning("no token for client(s) %s: they cannot join the run", missing[:5])
    tls = None
    cert, key = read_file(net.tls_cert, "tls_cert"), read_file(net.tls_key, "tls_key")
    if cert is not None and key is not None:
        tls = ServerTls(cert, key, read_file(net.tls_ca, "tls_ca"), net.mutual_tls)
    elif not _loopback(net.address):
        log.warning(
            "serving %s without TLS: tokens and updates cross the network in clear text "
            "(set network.tls_cert and network.tls_key)",
            net.address,
        )
    return GrpcServerSettings(
        address=net.address,
        tokens=tokens,
        deadline_s=net.round_deadline_s,
        max_inflight=net.max_inflight,
        **net.stream_settings(),
        tls=tls,
        port_file=net.port_file,
        min_clients=net.min_clients,
        wait_for_clients=net.wait_for_clients or net.min_clients,
        startup_timeout_s=net.startup_timeout_s,
        resume_wait_s=net.resume_wait_s,
        min_upload_rate=net.min_upload_rate,
        upload_grace_s=net.upload_grace_s,
        max_calls_per_client=net.max_calls_per_client,
        max_calls_per_host=net.max_calls_per_host or 2 * len(client_ids) + 4,
        max_workers=pool_size(len(client_ids), net.max_calls_per_client, net.max_inflight),
    )


def pool_size(clients: int, per_client: int, inflight: int) -> int:
    """Handler threads: every client's long poll and upload (2 each), one client at its
    call cap on top, and room for refusals (each a short task: no request is read)."""
    return 2 * clients + per_client + inflight + 16


def upload_limit(
    shapes: Mapping[str, tuple[int, ...]],
    dtypes: Mapping[str, torch.dtype],
    codec: object,
    cap: int,
) -> int:
    """Largest upload frame worth reading: the codec's largest encoding of an update of
    these shapes, plus room for the frame header (64 KiB) and 2 %, never above ``cap``.
    A codec that cannot bound its output leaves ``cap``."""
    bound = max_encoded_bytes(codec, shapes, dtypes)
    if bound is None:
        return cap
    return min(cap, math.ceil(bound * 1.02) + UPLOAD_HEADROOM)


def grpc_feature(parts: Parts) -> None:
    net = parts.config.network
    if net.mode != "grpc":
        return
    from fedloom.transport.grpc_server import GrpcServerTransport

    settings = server_settings(net, [str(k) for k in range(parts.config.clients.num)])
    if parts.phase is not None:  # a secure round's stage messages: protocol 3 and later
        settings = dataclasses.replace(settings, lowest_protocol=SECURE_VERSION)
    # an upload larger than the largest encoding of this model's update is refused unread
    state = parts.initial_state or {
        n: t for n, t in state_of(parts.model).items() if parts.trainable(n)
    }
    specs = [  # one per model the strategy keeps (FedDF: per architecture)
        UpdateSpec.of({**view, **parts.strategy.update_extras(view)}, 0)
        for view in parts.strategy.views(state).values()
    ]
    limit = max(
        upload_limit(spec.shapes, spec.dtypes, parts.up, net.max_message_bytes) for spec in specs
    )
    parts.max_update_bytes = limit
    parts.min_updates = net.min_clients
    # a round phase's own replies (a secure round's masked input) may be larger
    frames = max(limit, min(parts.stage_reply_bytes, net.max_message_bytes))

    def factory(handlers: Mapping[str, Handler]) -> GrpcServerTransport:
        transport = GrpcServerTransport(settings)
        transport.limit_uploads(frames)
        return transport

    parts.transport = factory


def _loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _numeric_first(cid: str) -> tuple[int, str]:
    return (int(cid), "") if cid.isdigit() else (1 << 62, cid)
