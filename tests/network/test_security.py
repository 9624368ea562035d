"""TLS and mutual TLS with test certificates; unauthenticated clients are refused and logged."""

from __future__ import annotations

import logging
import subprocess
import sys

import grpc
import pytest

from fedloom.config import load_config
from fedloom.core.errors import ConfigError
from fedloom.network.certs import make_certs
from fedloom.network.client import AuthenticationRefused, client_settings, local_client, run_client
from fedloom.network.server import server_experiment
from fedloom.transport.grpc_client import GrpcClientChannel, GrpcClientSettings

from .conftest import ThreadedServer, network_overrides, start_clients, tokens_for


def _channel(settings: GrpcClientSettings, **changes) -> GrpcClientChannel:
    return GrpcClientChannel(GrpcClientSettings(**{**vars(settings), **changes}))


def test_mutual_tls_run_completes_and_intruders_are_refused(tmp_path, small, caplog):
    files = make_certs(tmp_path / "certs")
    tls = [
        f"network.tls_cert={files.server_cert}",
        f"network.tls_key={files.server_key}",
        f"network.tls_ca={files.ca}",
        "network.mutual_tls=true",
        f"network.client_cert={files.client_cert}",
        f"network.client_key={files.client_key}",
    ]
    overrides = [*small, "clients.num=2", "clients.per_round=2", "rounds=1", *tls]
    overrides += [*network_overrides(tmp_path, 2), f"output_dir={tmp_path / 'run'}"]
    server = ThreadedServer(overrides)
    config = load_config(None, overrides)
    tokens = tokens_for(2)
    good = client_settings(config, server.address, "0", tokens["0"])
    caplog.set_level(logging.WARNING)

    for who, token in (("0", "wrong-token-wrong-token"), ("7", tokens["0"]), ("", "")):
        with pytest.raises(grpc.RpcError) as refused:
            _channel(good, client_id=who, token=token).pull()
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # a client with the wrong token gives up at once instead of retrying forever
    with pytest.raises(AuthenticationRefused):
        run_client(local_client(config, 1), _channel(good, token="x" * 32), config)
    assert server.transport.refused == 4
    assert sum("bad token" in r.getMessage() for r in caplog.records) == 4
    # no TLS at all, or TLS without a client certificate: the handshake fails
    assert good.tls is not None
    for channel in (
        _channel(good, tls=None),
        _channel(good, tls=type(good.tls)(good.tls.ca_pem)),
    ):
        with pytest.raises(grpc.RpcError) as failed:
            channel.pull()
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE

    clients = start_clients(overrides, server.address, [0, 1], lambda k: tokens[str(k)])
    result = server.join(timeout=90)
    for thread in clients:
        thread.join(timeout=10)
    assert result.metrics[-1]["num_clients"] == 2
    assert result.summary["final_test_accuracy"] > 0.5


def test_server_refuses_to_start_without_tokens(tmp_path, small):
    with pytest.raises(ConfigError, match="tokens_file is required"):
        server_experiment(None, [*small, f"output_dir={tmp_path / 'x'}"])
    bad = tmp_path / "tokens.json"
    bad.write_text('{"0": "short"}')
    with pytest.raises(ConfigError, match=">= 16 characters"):
        server_experiment(None, [*small, f"network.tokens_file={bad}"])


def test_certs_command_writes_a_verifiable_chain(tmp_path):
    from cryptography import x509

    out = subprocess.run(
        [sys.executable, "-c", "from fedloom.cli import main; main()", "certs", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    server = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert (tmp_path / "server.key").stat().st_mode & 0o777 == 0o600


def test_missing_tokens_and_plaintext_off_loopback_are_warned(tmp_path, caplog):
    import json
    import logging

    from fedloom.network.config import NetworkConfig
    from fedloom.network.feature import server_settings

    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"0": "x" * 32}))
    caplog.set_level(logging.WARNING, logger="fedloom.network.feature")
    server_settings(NetworkConfig(tokens_file=str(tokens), address="0.0.0.0:0"), ["0", "1"])
    text = caplog.text
    assert "no token for client(s) ['1']" in text and "without TLS" in text
    caplog.clear()
    server_settings(NetworkConfig(tokens_file=str(tokens), address="127.0.0.1:0"), ["0"])
    assert caplog.text == ""


def test_clients_of_another_protocol_version_are_refused_with_the_reason(tmp_path, small):
    from fedloom.network.client import run_client
    from fedloom.transport.grpc_common import (
        TOKEN_KEY,
        VERSION_KEY,
        ProtocolMismatch,
        check_protocol,
        parse_control,
    )

    assert check_protocol([(VERSION_KEY, "2")]) is None
    assert check_protocol([]) == "client speaks protocol 1, this server speaks 2 or 3"
    assert check_protocol([(VERSION_KEY, "4")]) == (
        "client speaks protocol 4, this server speaks 2 or 3"
    )
    assert check_protocol([(VERSION_KEY, "two")]) is not None
    with pytest.raises(ProtocolMismatch, match="server speaks protocol 1, this client speaks 3"):
        parse_control(b'{"status": "done", "size": 0}')  # a version-1 server's record
    assert parse_control(b'{"v": 2, "status": "retry", "size": 0}') == ("retry", 0)
    assert parse_control(b'{"v": 3, "status": "idle", "size": 0}') == ("idle", 0)

    overrides = [*small, "clients.num=1", "clients.per_round=1", "rounds=1"]
    overrides += [*network_overrides(tmp_path, 1), f"output_dir={tmp_path / 'run'}"]
    server = ThreadedServer(overrides)
    config = load_config(None, overrides)
    tokens = tokens_for(1)
    channel = GrpcClientChannel(client_settings(config, server.address, "0", tokens["0"]))
    stream = channel._channel.unary_stream("/fedloom.Federation/Pull")
    for version, metadata in (("1", []), ("4", [(VERSION_KEY, "4")])):
        call = stream(b"", metadata=[("fedloom-client", "0"), (TOKEN_KEY, tokens["0"]), *metadata])
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(call))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert refused.value.details() == (
            f"client speaks protocol {version}, this server speaks 2 or 3"
        )
    # a client the server refuses for its version stops at once instead of retrying
    old = GrpcClientChannel(client_settings(config, server.address, "0", tokens["0"]))
    old._metadata = old._metadata[:2]  # what a version-1 client sends
    with pytest.raises(ProtocolMismatch, match="client speaks protocol 1"):
        run_client(local_client(config, 0), old, config)
    (client,) = start_clients(overrides, server.address, [0], lambda k: tokens[str(k)])
    assert server.join(timeout=90).metrics[-1]["num_clients"] == 1
    client.join(timeout=30)
    for each in (channel, old):
        each.close()


def test_plaintext_off_loopback_needs_network_insecure(tmp_path, small):
    from fedloom.network.server import serve
    from fedloom.transport.grpc_common import is_loopback

    loopback = ["127.0.0.1:1", "127.8.9.10:1", "[::1]:1", "localhost:1", "LOCALHOST:1"]
    remote = ["10.0.0.7:1", "0.0.0.0:1", "[::]:1", "server.example.org:1", "localhost.evil:1"]
    assert all(is_loopback(a) for a in loopback) and not any(is_loopback(a) for a in remote)

    config = load_config(None, small)
    with pytest.raises(ConfigError, match="network.insecure: refusing plaintext to 10.0.0.7:1"):
        client_settings(config, "10.0.0.7:1", "0", "t" * 32)
    assert client_settings(config, "127.0.0.1:1", "0", "t" * 32).tls is None
    insecure = load_config(None, [*small, "network.insecure=true"])
    assert client_settings(insecure, "10.0.0.7:1", "0", "t" * 32).tls is None
    files = make_certs(tmp_path / "certs")
    with_ca = load_config(None, [*small, f"network.tls_ca={files.ca}"])
    assert client_settings(with_ca, "10.0.0.7:1", "0", "t" * 32).tls is not None

    overrides = [*small, *network_overrides(tmp_path, 3), "network.address=0.0.0.0:0"]
    experiment = server_experiment(None, [*overrides, f"output_dir={tmp_path / 'a'}"])
    with pytest.raises(ConfigError, match="network.insecure: refusing to serve 0.0.0.0:0"):
        serve(experiment)
    assert experiment.server.transport.port is None  # it never listened


def _tokens_cli(*args: str):
    from typer.testing import CliRunner

    from fedloom.cli import app

    return CliRunner().invoke(app, ["tokens", *args])


def test_tokens_command_writes_a_private_file_and_never_overwrites_by_accident(tmp_path):
    import json

    from fedloom.network.feature import load_tokens

    path = tmp_path / "tokens.json"
    result = _tokens_cli(str(path), "3")
    assert result.exit_code == 0, result.output
    tokens = load_tokens(path)  # the format fedloom server reads
    assert sorted(tokens) == ["0", "1", "2"] and len(set(tokens.values())) == 3
    assert all(len(t) >= 40 for t in tokens.values())
    assert path.stat().st_mode & 0o777 == 0o600

    refused = _tokens_cli(str(path), "--ids", "alice,bob")
    assert refused.exit_code == 2 and "exists; pass --force" in refused.output
    assert load_tokens(path) == tokens  # untouched
    forced = _tokens_cli(str(path), "--ids", "alice,bob", "--force")
    assert forced.exit_code == 0, forced.output
    assert sorted(json.loads(path.read_text())) == ["alice", "bob"]
    assert path.stat().st_mode & 0o777 == 0o600
    for bad in (["5", "--ids", "a"], [], ["--ids", "a,,b"], ["--ids", "a,a"]):
        result = _tokens_cli(str(tmp_path / "other.json"), *bad)
        assert result.exit_code == 2, (bad, result.output)
    assert not (tmp_path / "other.json").exists()
