"""A networked client process: the simulation's ``Client`` class behind a gRPC channel.

The client assembles the same federation locally from the same config (dataset,
partition, model, trainer, the features' transforms) and builds only its own ``Client``
(``fedloom.experiment.build_clients``), then loops:
long-poll for work, train, stream the update back. When the server is unreachable (for
example while it restarts), or answers "retry" (it is stopping before the run is over),
it polls again with exponential backoff, and gives up only after ``network.give_up_s``
without work or an answer other than "retry". Off loopback it speaks TLS only, unless
``network.insecure`` says otherwise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import torch

from fedloom.client.client import Client
from fedloom.config import FedConfig, load_config
from fedloom.core.errors import ConfigError, FedloomError
from fedloom.core.message import Message
from fedloom.data.base import FederatedDataset
from fedloom.data.site import load_site
from fedloom.experiment import assemble, build_clients
from fedloom.network.config import read_file
from fedloom.parts import Parts
from fedloom.transport.grpc_client import ClientTls, GrpcClientChannel, GrpcClientSettings
from fedloom.transport.grpc_common import ProtocolMismatch, is_loopback
from fedloom.transport.inprocess import Handler

log = logging.getLogger(__name__)


class AuthenticationRefused(FedloomError):
    """The server refused this client's identity or token; retrying will not help."""


@dataclass
class Participant:
    """A networked client: its id and the handler that answers the server's messages
    (its ``Client``'s, wrapped to answer a secure round's stages when the run has them)."""

    client_id: str
    handle: Handler
    client: Client
    """The client behind the handler (its data, model and state)."""


def _participant(parts: Parts, cid: str) -> Participant:
    client = build_clients(parts, [cid])[cid]
    wrap = parts.client_handler
    return Participant(cid, client.handle if wrap is None else wrap(client.handle, cid), client)


def _as_client(config: FedConfig) -> FedConfig:
    """The config a client process assembles: the simulated side only, since a client
    must never open a server of its own."""
    return config.model_copy(
        update={"network": config.network.model_copy(update={"mode": "simulation"})}
    )


def local_client(config: FedConfig, partition: int) -> Participant:
    """Client ``partition`` of the federation ``config`` describes, with its local data."""
    if not 0 <= partition < config.clients.num:
        raise ConfigError([f"--partition must be in [0, {config.clients.num}), got {partition}"])
    return _participant(assemble(_as_client(config)), str(partition))


def site_client(config: FedConfig, partition: int, site: str | Path) -> Participant:
    """Client ``partition`` training on its own files (``site.yaml``, see
    ``fedloom.data.site``): nothing of the federation's dataset is read."""
    if not 0 <= partition < config.clients.num:
        raise ConfigError([f"--id must be in [0, {config.clients.num}), got {partition}"])
    data, classes = load_site(site)
    empty = torch.zeros(0, dtype=torch.int64)
    everything = torch.arange(len(data))
    own = FederatedDataset(
        train=data,
        test=data.subset(empty),
        client_indices=[everything if k == partition else empty for k in range(config.clients.num)],
        num_classes=classes,
        input_shape=tuple(data.x.shape[1:]),
    )
    return _participant(assemble(_as_client(config), data=own), str(partition))


def client_settings(
    config: FedConfig, address: str, client_id: str, token: str
) -> GrpcClientSettings:
    net = config.network
    tls = None
    ca = read_file(net.tls_ca, "tls_ca")
    if ca is None and not net.insecure and not is_loopback(address):
        raise ConfigError(
            [
                f"network.insecure: refusing plaintext to {address}, which is not loopback "
                "(the token would cross the network in clear); set network.tls_ca, or "
                "network.insecure=true on a network you trust"
            ]
        )
    if ca is not None:
        tls = ClientTls(
            ca,
            read_file(net.client_cert, "client_cert"),
            read_file(net.client_key, "client_key"),
            net.tls_server_name,
        )
    return GrpcClientSettings(
        address=address,
        client_id=client_id,
        token=token,
        tls=tls,
        reconnect_max_s=net.reconnect_max_s,
        **net.stream_settings(),
    )


def run_client(client: Participant, channel: GrpcClientChannel, config: FedConfig) -> int:
    """Serve the federation until the server says it is done; returns how many rounds it
    answered (a secure round's stages count once)."""
    net = config.network
    first_backoff = min(0.25, net.reconnect_max_s)
    backoff, last_contact = first_backoff, time.monotonic()
    answered: set[int] = set()
    while True:
        try:
            status, work = channel.pull()
        except grpc.RpcError as error:
            _refused(error, client.client_id)
            status, work = "unreachable", None
            log.info("server unreachable (%s); retrying in %.2f s", error.code(), backoff)
        except ProtocolMismatch:
            raise
        except FedloomError as error:  # a malformed answer: report it, poll again later
            log.warning("bad work from the server: %s", error)
            status, work = "malformed", None
        if status in ("unreachable", "malformed", "retry"):
            if status != "malformed" and time.monotonic() - last_contact > net.give_up_s:
                raise FedloomError(f"server unavailable for {net.give_up_s:g} s") from None
            if status == "retry":
                log.info("the server is stopping; polling again in %.2f s", backoff)
            time.sleep(backoff)
            backoff = min(2 * backoff, net.reconnect_max_s)
            continue
        backoff, last_contact = first_backoff, time.monotonic()
        if status == "done":
            return len(answered)
        if work is None:
            continue
        if _answer(client, channel, work):
            answered.add(work.round)


def _refused(error: grpc.RpcError, client_id: str) -> None:
    """Raise if the server refused this client for good (identity or protocol version)."""
    code = error.code()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        raise AuthenticationRefused(f"server refused client {client_id}") from None
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        raise ProtocolMismatch(f"server refused client {client_id}: {error.details()}") from None


def _answer(client: Participant, channel: GrpcClientChannel, work: Message) -> bool:
    try:
        reply = client.handle(work)
    except Exception as error:  # a failed fit must not end the process: the round drops it
        log.warning("round %d: %s failed: %r", work.round, work.kind, error)
        return False
    try:
        accepted, reason = channel.push(reply)
    except grpc.RpcError as error:  # the server went away mid-upload; it will ask again
        log.warning("round %d: upload failed (%s)", work.round, error.code())
        return False
    if not accepted:
        log.warning("round %d: the server refused the update: %s", work.round, reason)
    return accepted


def client_main(
    path: str | None,
    overrides: Sequence[str],
    address: str,
    partition: int,
    token: str,
    site: str | None = None,
) -> int:
    config = load_config(path, overrides, import_code=False)  # code only from --import
    client = (
        local_client(config, partition) if site is None else site_client(config, partition, site)
    )
    channel = GrpcClientChannel(client_settings(config, address, str(partition), token))
    try:
        return run_client(client, channel, config)
    finally:
        channel.close()
