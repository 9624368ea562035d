"""Settings of a networked (gRPC) federation.

``mode="simulation"`` (the default) leaves every other field unused. ``fedloom server``
switches it to ``"grpc"``; the same file also tells ``fedloom client`` where the CA and its
client certificate live, so one config serves both sides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedloom.core.errors import ConfigError


class NetworkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    mode: Literal["simulation", "grpc"] = "simulation"
    """``simulation``: clients in this process; ``grpc``: ``fedloom server`` and clients."""
    address: str = "127.0.0.1:50051"
    """host:port the server listens on (port 0: the OS picks a free one)."""
    port_file: str | None = None
    """Where the server writes the address it actually bound (useful with port 0)."""
    round_deadline_s: float = Field(120.0, gt=0)
    """A round ends when every sampled client answered or this many seconds passed."""
    min_clients: int = Field(1, ge=1)
    """Fewest valid updates a round needs; with fewer the global model stays unchanged."""
    wait_for_clients: int | None = Field(None, ge=1)
    """Clients that must have connected before the first round of a fresh run
    (default: min_clients)."""
    startup_timeout_s: float = Field(600.0, gt=0)
    """Longest wait for clients before the first round; then it starts with those there."""
    resume_wait_s: float = Field(30.0, gt=0)
    """A resumed (restarted) server waits only this long for the ``wait_for_clients``:
    some may have died with it. It then goes on as soon as min_clients are back (waiting
    for those up to startup_timeout_s)."""
    max_message_bytes: int = Field(4 << 30, ge=1024)
    """Largest frame accepted or sent; frames travel in chunks, so this may exceed 2 GiB.
    An upload is further bounded by the largest encoding of the model's update."""
    min_upload_rate: float = Field(64 * 1024, gt=0)
    """Bytes/s an upload must average after ``upload_grace_s``; a slower one is cancelled."""
    upload_grace_s: float = Field(10.0, ge=0)
    """Seconds an upload may take before ``min_upload_rate`` applies."""
    max_calls_per_client: int = Field(4, ge=2)
    """Calls one authenticated client may have open at once (it needs one pull, one push)."""
    max_calls_per_host: int | None = Field(None, ge=2)
    """Calls one peer host may have open at once (default: 2 x clients.num + 4, so all the
    clients may share one machine); lower it when clients sit on machines of their own."""
    chunk_bytes: int = Field(1 << 20, ge=1024, le=64 << 20)
    """Size of one gRPC message of a streamed frame (gRPC's own limit is set just above)."""
    max_inflight: int = Field(4, ge=1)
    """Updates the server holds at once before aggregating them (bounds its memory)."""
    poll_s: float = Field(10.0, gt=0)
    """How long one long-poll for work waits; an idle client re-polls, a heartbeat."""
    keepalive_s: float = Field(20.0, gt=0)
    """HTTP/2 keepalive ping interval, so idle connections are not cut by middleboxes."""
    keepalive_timeout_s: float = Field(10.0, gt=0)
    """A keepalive ping unanswered this long closes the connection."""
    linger_s: float = Field(3.0, ge=0)
    """After the last round the server answers "done" this long so clients exit cleanly
    ("retry" when it stops early: a signal or an error)."""
    tokens_file: str | None = None
    """JSON object {client_id: secret token}; required by ``fedloom server``."""
    tls_cert: str | None = None
    """Server certificate (PEM). With ``tls_key`` set, the server only speaks TLS."""
    tls_key: str | None = None
    """The server certificate's private key (PEM)."""
    tls_ca: str | None = None
    """CA certificate (PEM): clients verify the server with it; mTLS verifies clients."""
    mutual_tls: bool = False
    """Require client certificates signed by ``tls_ca``."""
    client_cert: str | None = None
    """Client certificate and key (PEM), presented when the server asks for mutual TLS."""
    client_key: str | None = None
    """The client certificate's private key (PEM), for mutual TLS."""
    tls_server_name: str | None = None
    """Name to check in the server certificate when it differs from the host dialled."""
    insecure: bool = False
    """Allow plaintext (no TLS) to or on an address off loopback: tokens and updates then
    cross the network in clear. Without it the client refuses and the server will not start."""
    client_weights: Literal["server", "claimed", "uniform"] = "server"
    """Whose numbers weight each update: ``server`` (the partition sizes the server builds
    from this config, or ``client_sizes_file``), ``claimed`` (the clients' own counts, each
    capped at ``max_weight_ratio`` x the round's median claim; for clients that bring their
    own data) or ``uniform``. Used in simulation too."""
    client_sizes_file: str | None = None
    """JSON object {client_id: examples}: the sizes ``client_weights=server`` uses in
    ``fedloom server`` (read by the server only)."""
    max_weight_ratio: float = Field(2.0, ge=1, le=1000)
    """``client_weights=claimed``: a claim weighs at most this times the round's median."""
    reconnect_max_s: float = Field(5.0, gt=0)
    """Longest wait between a client's reconnection attempts (exponential backoff)."""
    give_up_s: float = Field(300.0, gt=0)
    """A client exits after the server has been unreachable (or said only "retry") this long."""

    @model_validator(mode="after")
    def _tls_pairs(self) -> NetworkConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("network.tls_cert and network.tls_key must be set together")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("network.client_cert and network.client_key must be set together")
        if self.mutual_tls and (self.tls_ca is None or self.tls_cert is None):
            raise ValueError("network.mutual_tls needs network.tls_ca, tls_cert and tls_key")
        if self.chunk_bytes > self.max_message_bytes:
            raise ValueError("network.chunk_bytes exceeds network.max_message_bytes")
        return self

    def stream_settings(self) -> dict[str, Any]:
        """The settings both ends of a channel share (long poll, chunking, limits)."""
        from fedloom.transport.grpc_common import Keepalive

        return {
            "poll_s": self.poll_s,
            "chunk_bytes": self.chunk_bytes,
            "max_message_bytes": self.max_message_bytes,
            "keepalive": Keepalive(self.keepalive_s, self.keepalive_timeout_s),
        }


def read_file(path: str | None, key: str) -> bytes | None:
    """The bytes of the file ``network.<key>`` names (a certificate, a key), if any."""
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ConfigError([f"network.{key}: cannot read {path}: {error}"]) from None
