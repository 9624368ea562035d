"""Checkpoints rewritten in place: two tensor slots and a hard-linked state file, each
commit atomic; the background writer commits them in order."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fedloom.core.errors import FedloomError
from fedloom.server.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fedloom.server.checkpoint_writer import CheckpointWriter


def ckpt(rnd: int) -> Checkpoint:
    return Checkpoint(rnd, {"w": torch.full((3,), float(rnd))}, extra={"round": rnd})


def named(directory: Path) -> str:
    return str(json.loads((directory / "state.json").read_text())["tensors"])


def test_slots_alternate_and_the_state_is_a_link_to_a_spare(tmp_path: Path) -> None:
    names = []
    for rnd in (1, 2, 3):
        save_checkpoint(tmp_path, ckpt(rnd))
        names.append(named(tmp_path))
        loaded = load_checkpoint(tmp_path)
        assert loaded.round == rnd and torch.equal(loaded.global_state["w"], torch.full((3,), rnd))
    assert names == ["tensors-a.safetensors", "tensors-b.safetensors", "tensors-a.safetensors"]
    state = os.stat(tmp_path / "state.json")
    spares = [os.stat(tmp_path / f".state.json.{k}").st_ino for k in (0, 1)]
    assert state.st_ino in spares and state.st_nlink == 2
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "state.json",
        "tensors-a.safetensors",
        "tensors-b.safetensors",
    ]


def test_a_write_killed_in_the_spare_slot_leaves_the_last_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, ckpt(1))
    save_checkpoint(tmp_path, ckpt(2))  # state names slot b; slot a is the spare
    (tmp_path / "tensors-a.safetensors").write_bytes(b"\x00" * 7)  # a half-written round 3
    spare = next(p for p in tmp_path.glob(".state.json.*") if p.stat().st_nlink == 1)
    spare.write_bytes(b'{"round": 3, "tens')  # and a half-written state in the spare
    loaded = load_checkpoint(tmp_path)
    assert loaded.round == 2 and loaded.extra == {"round": 2}
    save_checkpoint(tmp_path, ckpt(3))  # the next commit rewrites both spares whole
    assert load_checkpoint(tmp_path).round == 3


def test_an_older_versions_checkpoint_loads_and_its_file_goes(tmp_path: Path) -> None:
    save_file({"global/w": torch.ones(3)}, tmp_path / "tensors-000007.safetensors")
    doc = {"round": 7, "tensors": "tensors-000007.safetensors", "strategy": {}, "clients": []}
    (tmp_path / "state.json").write_text(json.dumps({**doc, "extra": {}}))
    assert load_checkpoint(tmp_path).round == 7
    save_checkpoint(tmp_path, ckpt(8))
    assert load_checkpoint(tmp_path).round == 8
    assert not (tmp_path / "tensors-000007.safetensors").exists()


def test_the_writer_commits_in_order_from_a_snapshot(tmp_path: Path) -> None:
    writer = CheckpointWriter(tmp_path / "checkpoint")
    state = {"w": torch.zeros(3)}
    for rnd in (1, 2, 3):
        state["w"].fill_(float(rnd))
        writer.submit(Checkpoint(rnd, state, extra={"round": rnd}))
    state["w"].fill_(99.0)  # after the submit: not in the checkpoint
    writer.close()
    loaded = load_checkpoint(tmp_path / "checkpoint")
    assert loaded.round == 3 and torch.equal(loaded.global_state["w"], torch.full((3,), 3.0))


def test_a_failed_background_write_is_raised_by_wait(tmp_path: Path) -> None:
    blocker = tmp_path / "checkpoint"
    blocker.write_text("a file where the checkpoint directory should be")
    writer = CheckpointWriter(blocker)
    writer.submit(ckpt(1))
    with pytest.raises(OSError):
        writer.wait()
    writer.close()
    with pytest.raises(FedloomError, match="no checkpoint"):
        load_checkpoint(tmp_path / "elsewhere")
