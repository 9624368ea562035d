"""The torch.distributed engine: a round's clients shared by K processes (ranks).

Every rank builds the same federation from the same config. In each round every rank
samples the same clients, runs only its share (``fedloom.simulation.shard``) and streams
those updates into its own aggregator; the aggregator's sums and the round's tally are then
all-reduced as one float64 buffer (``fedloom.simulation.reduce``), so every rank applies the
same aggregate and holds the same global model. Rank 0 alone evaluates and writes the run
directory and checkpoints. It starts the others: it broadcasts its resolved config (and, on
resume, its checkpoint files), because another host cannot read its disk.

Collectives use gloo for CPU tensors and NCCL for CUDA tensors (one GPU per rank), with the
timeout ``simulation.timeout_s``. A rank that dies makes the others' next collective fail:
they stop with ``RankLost``, rank 0's last checkpoint stays, and ``fedloom resume`` continues.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fedloom.client.trainer import planned_steps
from fedloom.config import FedConfig, load_config, to_yaml
from fedloom.core.errors import ConfigError, FedloomError
from fedloom.server.server import RoundTally
from fedloom.server.strategy import Aggregator
from fedloom.simulation.launch import rank_env
from fedloom.simulation.ranks import (
    DEFAULT_TIMEOUT_S,
    Place,
    RankLost,
    Ranks,
    first_line,
    pack_files,
    place_from_env,
    unpack_files,
)
from fedloom.simulation.reduce import pack, slots_of, tally_slot, unpack
from fedloom.simulation.shard import ShardedTransport

if TYPE_CHECKING:
    from fedloom.experiment import Experiment

log = logging.getLogger(__name__)


def wants_launch(config: FedConfig) -> bool:
    """``simulation.workers > 1`` outside torchrun: this process starts the ranks."""
    return config.simulation.workers > 1 and "WORLD_SIZE" not in os.environ


def _start_files(experiment: Experiment) -> dict[str, bytes]:
    files = {"config.yaml": to_yaml(experiment.config).encode()}
    if experiment.server.round > 0:  # a resume: the checkpoint rank 0 restored from
        folder = experiment.run_dir / "checkpoint"
        files |= {f"checkpoint.{p.name}": p.read_bytes() for p in sorted(folder.iterdir())}
    return files


# -- wiring a rank's experiment ------------------------------------------------------------


def expected_work(experiment: Experiment) -> dict[str, float]:
    """Each client's planned local steps: what the assignment balances."""
    train = experiment.config.train
    indices = experiment.data.client_indices
    return {str(k): float(planned_steps(train, len(idx))) for k, idx in enumerate(indices)}


def attach(experiment: Experiment, ranks: Ranks) -> None:
    """Make ``experiment``'s server run this rank's share and all-reduce each round."""
    server = experiment.server
    server.transport = ShardedTransport(
        server.transport, ranks.rank, ranks.world, expected_work(experiment)
    )
    template = {**server.global_state, **server.strategy.update_extras(server.global_state)}
    device = experiment.parts.device if experiment.parts.device.type == "cuda" else None

    def reduce(rnd: int, sampled: list[str], aggregator: Aggregator, tally: RoundTally) -> None:
        slots = [tally_slot(tally, sampled), *slots_of(aggregator, template)]
        flat = pack(slots)
        flat = flat.to(device) if device is not None else flat
        ranks.all_reduce(flat, f"round {rnd}")
        unpack(slots, flat.cpu())

    server.reduce = reduce  # type: ignore[assignment]


def lead(experiment: Experiment) -> None:
    """Rank 0 of several: join, send the others the config (and checkpoint), attach.
    In a single process this does nothing."""
    place = place_from_env()
    if place is None:
        return
    if place.rank != 0:
        raise RuntimeError("lead() runs on rank 0; the other ranks follow()")
    check_gpus(experiment.config)
    ranks = Ranks(place, experiment.config.simulation.timeout_s)
    atexit.register(ranks.close)
    ranks.run_dir = experiment.run_dir
    ranks.broadcast_bytes(pack_files(_start_files(experiment)), "the start")
    attach(experiment, ranks)


def is_follower() -> bool:
    place = place_from_env()
    return place is not None and place.rank > 0


def follow(timeout_s: float = DEFAULT_TIMEOUT_S, config: FedConfig | None = None) -> None:
    """Rank r > 0: run this rank's share of every round, writing nothing that outlives the
    run (a private temporary directory). With its own ``config`` (``fedloom run``: the same
    command line as rank 0) it builds its federation while rank 0 builds its own, then
    checks that rank 0's config is the same; without (``fedloom resume``: the run directory
    may be on another host) it takes rank 0's config and checkpoint."""
    from fedloom.experiment import Experiment

    place = place_from_env()
    if place is None or place.rank == 0:
        raise RuntimeError("follow() runs on ranks other than 0")
    with tempfile.TemporaryDirectory(prefix=f"fedloom-rank{place.rank}-") as tmp:
        run_dir = Path(tmp) / "run"
        early = None
        if config is not None:
            check_gpus(config)
            early = Experiment(config.model_copy(update={"output_dir": str(run_dir)}))
        ranks = Ranks(place, timeout_s)
        try:
            _run_follower(_received(ranks, Path(tmp), early), ranks)
        finally:
            ranks.close()


def _received(ranks: Ranks, tmp: Path, early: Experiment | None) -> Experiment:
    """This follower's experiment, checked against (or built from) rank 0's config, and
    restored from rank 0's checkpoint on a resume."""
    from fedloom.experiment import Experiment

    files = unpack_files(ranks.broadcast_bytes(None, "the start"))
    run_dir = early.run_dir if early is not None else tmp / "run"
    (tmp / "config.yaml").write_bytes(files.pop("config.yaml"))
    sent = load_config(tmp / "config.yaml", [f"output_dir={run_dir}"])
    experiment = early if early is not None else Experiment(sent)
    differ = config_differences(experiment.config, sent)
    if differ:
        raise ConfigError(
            [f"rank {ranks.rank} was started with other values than rank 0 for {differ}"]
        )
    check_gpus(sent)
    if files:  # a resume: restore from rank 0's checkpoint, copied into our temporary folder
        folder = experiment.run_dir / "checkpoint"
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / name.removeprefix("checkpoint.")).write_bytes(data)
        experiment.restore()
    return experiment


def _run_follower(experiment: Experiment, ranks: Ranks) -> None:
    attach(experiment, ranks)
    experiment.server.evaluate = None  # rank 0 evaluates
    experiment.server.run(experiment.config.rounds)


def config_differences(mine: FedConfig, theirs: FedConfig) -> list[str]:
    """The top-level keys where two configs differ (the run directory may)."""
    a, b = mine.model_dump(mode="json"), theirs.model_dump(mode="json")
    return sorted(k for k in a.keys() | b.keys() if k != "output_dir" and a.get(k) != b.get(k))


def check_gpus(config: FedConfig) -> None:
    """One GPU per rank: NCCL cannot put two ranks on one device."""
    place = place_from_env()
    if place is None or not config.compute.device.startswith("cuda"):
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if place.local_rank >= count:
        raise ConfigError(
            [
                f"compute.device={config.compute.device}: local rank {place.local_rank} has no "
                f"GPU of its own (this host has {count}); start at most {count} ranks per host"
            ]
        )


# -- the command line's entry points ----------------------------------------------------------


def run_command(config: FedConfig, argv: list[str]) -> int | None:
    """``fedloom run``: the exit code when this process launched the ranks or was a
    follower rank; None when it runs the server itself (one process, or rank 0)."""
    from fedloom.simulation.launch import launch

    if wants_launch(config):
        return launch(argv, config.simulation.workers, threads=config.compute.threads)
    if is_follower():
        follow(config.simulation.timeout_s, config)
        return 0
    return None


def resume_command(run_dir: Path, overrides: list[str], argv: list[str]) -> int | None:
    """``fedloom resume``: as ``run_command``. A follower cannot read the run directory
    (it may be on another host): it takes everything from rank 0."""
    from fedloom.simulation.launch import launch

    if is_follower():
        follow()
        return 0
    if "WORLD_SIZE" in os.environ or not (run_dir / "config.yaml").is_file():
        return None
    try:
        config = load_config(run_dir / "config.yaml", overrides)
    except FedloomError:
        return None  # resume() reports it, with its own context
    if wants_launch(config):
        return launch(argv, config.simulation.workers, threads=config.compute.threads)
    return None


# -- from Python: ranks that build their federation in code ---------------------------------

Build = Callable[[], "Experiment"]
"""Builds the same Experiment on every rank (a module-level function: it is pickled by
reference into each spawned process)."""


def _rank_main(
    rank: int, build: Build, workers: int, port: int, threads: int | None, out: Any
) -> None:
    os.environ.update(rank_env({}, rank, workers, port, None))
    if threads is not None:
        torch.set_num_threads(threads)
    experiment = build()
    if rank == 0:
        lead(experiment)
        out.put(json.dumps(experiment.run().summary))  # text: nothing is unpickled
        return
    ranks = Ranks(Place(rank, workers, rank), experiment.config.simulation.timeout_s)
    try:
        with tempfile.TemporaryDirectory(prefix=f"fedloom-rank{rank}-") as tmp:
            _run_follower(_received(ranks, Path(tmp), experiment), ranks)
    finally:
        ranks.close()


def spawn(build: Build, workers: int, *, threads: int | None = None) -> dict[str, Any]:
    """Run the Experiment ``build()`` makes (your own model and data) as ``workers`` ranks
    on this host; returns rank 0's summary. ``threads``: torch threads per rank."""
    import torch.multiprocessing as mp

    from fedloom.simulation.launch import free_port

    out = mp.get_context("spawn").SimpleQueue()
    context = mp.start_processes(
        _rank_main,
        args=(build, workers, free_port(), threads, out),
        nprocs=workers,
        join=False,
        start_method="spawn",
    )
    try:
        while not context.join():
            pass
    except (mp.ProcessExitedException, mp.ProcessRaisedException) as error:
        raise RankLost(f"rank {error.error_index} failed: {first_line(error)}") from None
    summary: dict[str, Any] = json.loads(out.get())
    return summary
