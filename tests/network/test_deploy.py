"""``deploy-local``'s preparation: tokens, certificates and the config both sides read."""

from __future__ import annotations

import json
from pathlib import Path

from fedloom.config import load_config
from fedloom.network.deploy import _prepare


def test_prepare_writes_private_tokens_certs_and_a_shared_config(tmp_path):
    run_dir, config_file = _prepare(
        4, None, ["model.name=logreg", f"output_dir={tmp_path / 'run'}"], tls=True
    )
    assert run_dir == tmp_path / "run"
    tokens_file = run_dir / "network" / "tokens.json"
    tokens = json.loads(tokens_file.read_text())
    assert sorted(tokens) == ["0", "1", "2", "3"]
    assert len(set(tokens.values())) == 4 and all(len(t) >= 40 for t in tokens.values())
    assert tokens_file.stat().st_mode & 0o777 == 0o600
    config = load_config(config_file)
    assert (config.clients.num, config.clients.per_round) == (4, 4)
    net = config.network
    assert net.wait_for_clients == 4 and net.address == "127.0.0.1:0"
    assert net.tokens_file == str(tokens_file)
    for path in (net.tls_cert, net.tls_key, net.tls_ca):
        assert path is not None and Path(path).parent == run_dir / "network" / "certs"
    assert config.output_dir == str(run_dir)


def test_prepare_keeps_an_explicit_per_round(tmp_path):
    _, config_file = _prepare(5, None, ["clients.per_round=2", f"output_dir={tmp_path}"], False)
    config = load_config(config_file)
    assert (config.clients.num, config.clients.per_round) == (5, 2)
    assert config.network.tls_cert is None
