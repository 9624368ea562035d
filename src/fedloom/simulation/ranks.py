"""The process group of the distributed engine: joining it, and the two collectives the
engine needs (an all-reduce of one float64 buffer, a broadcast of bytes), each turning a
lost rank into one clear error. Nothing here knows about federations."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

from fedloom.core.errors import FedloomError

DEFAULT_TIMEOUT_S = 1800.0
"""Collective timeout of a rank that cannot read the config before joining (a resume)."""


class RankLost(FedloomError):
    """A collective failed: another rank died, hung past the timeout, or was stopped."""


@dataclass(frozen=True)
class Place:
    """This process's place in the world, from torchrun's environment variables."""

    rank: int
    world: int
    local_rank: int


def place_from_env() -> Place | None:
    """``Place`` when launched as one of several ranks (WORLD_SIZE > 1), else None."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    rank = int(os.environ.get("RANK", "0"))
    return Place(rank, world, int(os.environ.get("LOCAL_RANK", str(rank))))


class Ranks:
    """The joined process group, with the three collectives the engine uses."""

    def __init__(self, place: Place, timeout_s: float) -> None:
        self.place = place
        self.rank, self.world = place.rank, place.world
        cuda = torch.cuda.is_available()
        if cuda and place.local_rank < torch.cuda.device_count():
            torch.cuda.set_device(place.local_rank)  # "cuda" now means this rank's GPU
        backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"
        try:
            dist.init_process_group(
                backend,
                rank=place.rank,
                world_size=place.world,
                timeout=timedelta(seconds=timeout_s),
            )
        except (RuntimeError, ValueError) as error:
            raise RankLost(
                f"rank {place.rank} could not join the others: {first_line(error)}"
            ) from None
        self.run_dir: Path | None = None
        """Named in the error when a rank is lost (rank 0 only)."""

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def _lost(self, what: str, error: BaseException) -> RankLost:
        resume = (
            f"; `fedloom resume {self.run_dir}` continues from its last checkpoint"
            if self.run_dir is not None
            else ""
        )
        return RankLost(
            f"rank {self.rank}: another rank was lost during {what} ({first_line(error)}): "
            f"the run stops{resume}"
        )

    def all_reduce(self, flat: Tensor, what: str) -> None:
        try:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        except (RuntimeError, ValueError) as error:  # gloo/NCCL raise DistError subclasses
            raise self._lost(what, error) from None

    def broadcast_bytes(self, data: bytes | None, what: str) -> bytes:
        """Rank 0's ``data`` on every rank (the others pass None)."""
        try:
            size = torch.tensor([len(data) if data is not None else 0], dtype=torch.int64)
            dist.broadcast(size, src=0)
            buffer = (
                torch.frombuffer(bytearray(data), dtype=torch.uint8)
                if data is not None
                else torch.empty(int(size.item()), dtype=torch.uint8)
            )
            if buffer.numel():
                dist.broadcast(buffer, src=0)
        except (RuntimeError, ValueError) as error:
            raise self._lost(what, error) from None
        return buffer.numpy().tobytes()


def first_line(error: BaseException) -> str:
    """The error's first sentence, without gloo's source location."""
    text = str(error).strip().splitlines()
    first = re.sub(r"^\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", text[0] if text else "")
    return f"{type(error).__name__}: {first.split('. ')[0]}"


# -- what rank 0 sends at the start: named files as one byte string -------------------


def pack_files(files: dict[str, bytes]) -> bytes:
    """Named files as one byte string: a JSON header of names and sizes, then the bytes."""
    header = json.dumps([[name, len(data)] for name, data in files.items()]).encode()
    return len(header).to_bytes(8, "little") + header + b"".join(files.values())


def unpack_files(blob: bytes) -> dict[str, bytes]:
    length = int.from_bytes(blob[:8], "little")
    entries = json.loads(blob[8 : 8 + length])
    files, offset = {}, 8 + length
    for name, size in entries:
        if "/" in name or name.startswith("."):
            raise FedloomError(f"rank 0 sent an unexpected file name {name!r}")
        files[name] = blob[offset : offset + size]
        offset += size
    return files
