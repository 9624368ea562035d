"""``fedloom deploy-local N``: a server and N client processes on this machine.

Everything a real deployment needs is made on the spot inside the run directory's
``network/`` folder: one secret token per client (``tokens.json``, mode 0600), optionally
test certificates, and the resolved config both sides read. The server picks a free
port and writes it to ``network/address``; clients are started once it is there.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from fedloom.config import load_config, to_yaml
from fedloom.core.errors import ConfigError, FedloomError
from fedloom.network.certs import write_secret

ENTRY = "from fedloom.cli import main; main()"
TOKEN_ENV = "FEDLOOM_TOKEN"


def write_tokens(
    path: Path, client_ids: Sequence[str], *, overwrite: bool = True
) -> dict[str, str]:
    """A fresh secret per client, written to ``path`` with mode 0600 from its creation on;
    an existing ``path`` is a ``ConfigError`` unless ``overwrite``."""
    tokens = {cid: secrets.token_urlsafe(32) for cid in client_ids}
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_secret(path, json.dumps(tokens, indent=1).encode(), overwrite=overwrite)
    except FileExistsError:
        raise ConfigError([f"{path} exists; pass --force to overwrite it"]) from None
    return tokens


def token_ids(n: int | None, ids: str | None) -> list[str]:
    """The client ids of ``fedloom tokens``: 0..n-1, or the comma-separated ``ids``."""
    if (n is None) == (ids is None):
        raise ConfigError(["give either N (clients 0..N-1) or --ids a,b,c, not both"])
    if n is not None:
        return [str(k) for k in range(n)]
    names = [name.strip() for name in (ids or "").split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise ConfigError([f"--ids must be distinct, non-empty names: {ids!r}"])
    return names


def fedloom_command(*args: str) -> list[str]:
    """Run the ``fedloom`` CLI with this interpreter (no reliance on PATH)."""
    return [sys.executable, "-c", ENTRY, *args]


def wait_for_file(path: Path, process: subprocess.Popen[bytes], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().strip():
            return path.read_text().strip()
        if process.poll() is not None:
            raise FedloomError(f"the server exited with code {process.returncode} before serving")
        time.sleep(0.1)
    raise FedloomError(f"the server did not start serving within {timeout_s:g} s")


def _prepare(n: int, path: str | None, overrides: Sequence[str], tls: bool) -> tuple[Path, Path]:
    """Resolve the config, make tokens (and certificates); returns (run dir, config file)."""
    per_round = (
        []
        if any(o.startswith("clients.per_round=") for o in overrides)
        else [f"clients.per_round={n}"]
    )
    config = load_config(path, [*overrides, f"clients.num={n}", *per_round])
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(config.output_dir or f"runs/deploy-{config.data.name}-{stamp}")
    net_dir = run_dir / "network"
    write_tokens(net_dir / "tokens.json", [str(k) for k in range(n)])
    (net_dir / "address").unlink(missing_ok=True)
    network = {
        "tokens_file": str(net_dir / "tokens.json"),
        "address": "127.0.0.1:0",
        "port_file": str(net_dir / "address"),
        # round 1 waits for every client process to have started, not just min_clients
        "wait_for_clients": config.network.wait_for_clients or n,
    }
    if tls:
        from fedloom.network.certs import make_certs

        files = make_certs(net_dir / "certs")
        network |= {"tls_cert": str(files.server_cert), "tls_key": str(files.server_key)}
        network |= {"tls_ca": str(files.ca)}
    net = config.network.model_copy(update=network)
    config = config.model_copy(update={"output_dir": str(run_dir), "network": net})
    config_file = net_dir / "deploy.yaml"
    config_file.write_text(to_yaml(config))
    return run_dir, config_file


def deploy_local(
    n: int, path: str | None, overrides: Sequence[str], *, tls: bool = False
) -> tuple[int, Path]:
    """Run the federation; returns (the server's exit code, the run directory)."""
    run_dir, config_file = _prepare(n, path, overrides, tls)
    net_dir = config_file.parent
    tokens = json.loads((net_dir / "tokens.json").read_text())
    # this machine's own clients run the plugins the operator's config names
    imports = [arg for p in load_config(config_file).plugins for arg in ("--import", p)]
    server = subprocess.Popen(fedloom_command("server", str(config_file)))
    clients: list[subprocess.Popen[bytes]] = []
    try:
        address = wait_for_file(net_dir / "address", server, timeout_s=120)
        for k in range(n):
            log = open(net_dir / f"client-{k}.log", "wb")  # noqa: SIM115 - the child owns it
            args = [*imports, "client", "--server", address, "--partition", str(k)]
            args.append(str(config_file))
            env = {**os.environ, TOKEN_ENV: tokens[str(k)]}
            clients.append(
                subprocess.Popen(fedloom_command(*args), stdout=log, stderr=log, env=env)
            )
            log.close()
        code = server.wait()
        for client in clients:  # they hear "done" while the server lingers
            try:
                client.wait(timeout=15)
            except subprocess.TimeoutExpired:
                client.terminate()
        return code, run_dir
    finally:
        for process in [server, *clients]:
            if process.poll() is None:
                process.kill()
                process.wait()
