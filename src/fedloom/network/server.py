"""The networked server: an ``Experiment`` whose transport is gRPC, nothing else changes.

``serve`` runs the experiment (fresh, or resumed from the run directory's checkpoint)
over the transport ``fedloom.network.feature.grpc_feature`` put in place, once clients
have connected (a resumed run waits for them only ``network.resume_wait_s``: some may
have died with the previous server), and tells the clients when it is over: "done" only
once the run has finished, "retry" when it stops early (a signal, an error), so they keep
polling for the restarted server.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Sequence
from pathlib import Path

from fedloom.config import load_config
from fedloom.core.clientref import naming_clients
from fedloom.core.errors import ConfigError, FedloomError
from fedloom.experiment import Experiment, RoundHook, RunResult, resume
from fedloom.network.stopping import Interrupted
from fedloom.rundir import (
    CONFIG_FILE,
    SERVER_RESUMABLE,
    allowed_changes,
    check_inputs_apart,
    claim_run_dir,
    config_inputs,
    foreign_entries,
)
from fedloom.server.checkpoint import has_checkpoint
from fedloom.transport.grpc_common import is_loopback
from fedloom.transport.grpc_server import GrpcServerTransport

log = logging.getLogger(__name__)


def server_experiment(path: str | None, overrides: Sequence[str]) -> Experiment:
    """A fresh experiment, or the one in ``output_dir`` if it holds this federation.

    A non-empty ``output_dir`` must hold a run of the same federation: its saved config
    may differ from this one only in keys a resume may change. With a checkpoint it is
    resumed; without one (killed before its first checkpoint) it starts over. Any other
    non-empty directory is a ``ConfigError`` naming it and the differing keys.
    """
    overrides = [*overrides, "network.mode=grpc"]
    config = load_config(path, overrides)
    run_dir = Path(config.output_dir) if config.output_dir else None
    if run_dir is None:
        return Experiment(config)
    inputs = config_inputs(config, path)
    check_inputs_apart(run_dir, inputs)
    foreign = foreign_entries(run_dir, inputs)
    if foreign and not (run_dir / CONFIG_FILE).is_file():
        names = ", ".join(e.name for e in foreign[:4])
        raise ConfigError(
            [
                f"output_dir {run_dir} is not empty and holds no fedloom run ({names}); "
                "use an empty or new output_dir"
            ]
        )
    if foreign:
        try:
            allowed_changes(run_dir, config, SERVER_RESUMABLE)
        except ConfigError as error:
            raise ConfigError(
                [f"output_dir {run_dir} holds a different federation; use a new output_dir"]
                + error.problems
            ) from None
        if has_checkpoint(run_dir / "checkpoint"):
            experiment = resume(run_dir, config=config, allowed=SERVER_RESUMABLE)
            log.warning("resumed %s after round %d", run_dir, experiment.server.round)
            return experiment
    else:
        claim_run_dir(run_dir, inputs)  # refuses a run_dir that is a file
    experiment = Experiment(config)
    experiment.inputs.extend(inputs)
    experiment.run_dir_ready = True  # empty, or this federation killed before round 1 ended
    if experiment.metrics_log.path.exists():  # killed before its first checkpoint completed
        experiment.metrics_log.truncate_after(0)
    return experiment


def serve(experiment: Experiment, on_round: RoundHook | None = None) -> RunResult:
    """Run ``experiment`` over its gRPC transport, then tell the clients "done" if it
    finished, or "retry" if anything (``Interrupted`` by a signal, an error) stopped it."""
    net = experiment.config.network
    transport = experiment.server.transport
    if not isinstance(transport, GrpcServerTransport):
        raise ConfigError(["serve() needs network.mode=grpc"])
    if transport.settings.tls is None and not net.insecure and not is_loopback(net.address):
        raise ConfigError(
            [
                f"network.insecure: refusing to serve {net.address} in plaintext off loopback "
                "(tokens and updates would cross the network in clear); set "
                "network.tls_cert and network.tls_key, or network.insecure=true"
            ]
        )
    server = experiment.server
    try:
        transport.start()
    except (OSError, RuntimeError):  # grpc raises RuntimeError("Failed to bind ...")
        raise FedloomError(
            f"cannot listen on {net.address}: {listen_problem(net.address)}"
        ) from None
    with naming_clients(not experiment.config.privacy.withholds_client_info):
        status = "retry"
        try:
            if server.round < experiment.config.rounds:
                transport.await_clients(resumed=server.round > 0)
            result = experiment.run(on_round)
            status = "done"
            return result
        finally:
            try:
                transport.finish(net.linger_s, status)
            except Interrupted:  # a signal while lingering: stop now, the answer stays
                transport.finish(0.0, status)


def listen_problem(address: str) -> str:
    """Why ``address`` cannot be listened on, as the OS says it ("address already in use")."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, int(port)))
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            return "address already in use"
        return (error.strerror or str(error)).lower()
    except (ValueError, OverflowError):
        return "not a HOST:PORT address"
    return "the address could not be bound"
