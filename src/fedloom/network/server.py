"""The networked server: an ``Experiment`` whose transport is gRPC, nothing else changes.

``serve`` runs the experiment (fresh, or resumed from the run directory's checkpoint)
over the transport ``fedloom.network.feature.grpc_feature`` put in place, once clients
have connected (a resumed run waits for them only ``network.resume_wait_s``: some may
have died with the previous server), and tells the clients when it is over.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

from fedloom.config import load_config
from fedloom.core.errors import ConfigError
from fedloom.experiment import Experiment, RoundHook, RunResult, resume
from fedloom.server.checkpoint import has_checkpoint
from fedloom.transport.grpc_server import GrpcServerTransport

log = logging.getLogger(__name__)


def server_experiment(path: str | None, overrides: Sequence[str]) -> Experiment:
    """A fresh experiment, or the one in ``output_dir`` if it holds a checkpoint."""
    overrides = [*overrides, "network.mode=grpc"]
    config = load_config(path, overrides)
    run_dir = Path(config.output_dir) if config.output_dir else None
    if run_dir is not None and has_checkpoint(run_dir / "checkpoint"):
        experiment = resume(run_dir, overrides)
        log.warning("resumed %s after round %d", run_dir, experiment.server.round)
        return experiment
    experiment = Experiment(config)
    if experiment.metrics_log.path.exists():  # killed before its first checkpoint completed
        experiment.metrics_log.truncate_after(0)
    return experiment


def serve(experiment: Experiment, on_round: RoundHook | None = None) -> RunResult:
    """Run ``experiment`` over its gRPC transport, then let the clients know it is done."""
    net = experiment.config.network
    transport = experiment.server.transport
    if not isinstance(transport, GrpcServerTransport):
        raise ConfigError(["serve() needs network.mode=grpc"])
    server = experiment.server
    server.min_updates = net.min_clients
    server.spec = dataclasses.replace(server.spec, max_bytes=net.max_message_bytes)
    transport.start()
    try:
        if server.round < experiment.config.rounds:
            transport.await_clients(resumed=server.round > 0)
        return experiment.run(on_round)
    finally:
        transport.finish(net.linger_s)
