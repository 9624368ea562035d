"""Whole runs: accuracy on real data, determinism, kill-and-resume, the Python API."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import TensorDataset

import fedloom
from fedloom.config import load_config
from fedloom.experiment import Experiment

from .processes import sigkill, wait_until

SMALL = ["clients.num=6", "clients.per_round=3", "train.local_epochs=1", "train.batch_size=16"]


def run(tmp_path: Path, name: str, overrides: list[str]):
    cfg = load_config(None, [*overrides, f"output_dir={tmp_path / name}"])
    return Experiment(cfg).run()


@pytest.mark.slow
def test_default_federation_on_digits_learns(tmp_path):
    result = run(tmp_path, "digits", ["rounds=10"])
    assert result.summary["final_test_accuracy"] >= 0.90
    files = {p.name for p in result.run_dir.iterdir()}
    assert {
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "checkpoint",
        "model.safetensors",
        "accuracy.png",
        "loss.png",
        "partition.csv",
        "partition.png",
    } <= files
    line = result.metrics[-1]
    for key in (
        "round",
        "test_accuracy",
        "test_loss",
        "train_loss",
        "num_clients",
        "bytes_up",
        "bytes_down",
        "wall_s",
    ):
        assert line[key] is not None
    assert line["num_clients"] == 10
    # every client downloads the same float32 model and uploads a float32 update
    params = result.summary["num_parameters"]
    assert line["bytes_down"] > 10 * params * 4 and line["bytes_up"] > 10 * params * 4


def test_same_seed_gives_identical_metrics(tmp_path):
    overrides = [*SMALL, "rounds=3", "data.partition=dirichlet", "data.alpha=0.5"]
    a = run(tmp_path, "a", overrides).metrics
    b = run(tmp_path, "b", overrides).metrics
    strip = lambda ms: [{k: v for k, v in m.items() if k != "wall_s"} for m in ms]  # noqa: E731
    assert strip(a) == strip(b)
    c = run(tmp_path, "c", [*overrides, "seed=1"]).metrics
    assert strip(a) != strip(c)


def _checkpointed(run_dir: Path) -> int | None:
    """The round of the committed checkpoint in ``run_dir`` (None: none yet)."""
    try:
        return int(json.loads((run_dir / "checkpoint" / "state.json").read_text())["round"])
    except (OSError, ValueError, KeyError):
        return None


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedloom.cli", *args]


# A run that stops in the middle of round 4 (round 3 is checkpointed, round 4's work is
# out to its clients), says so, and waits there to be killed.
HELD_RUN = """
import sys, time
from pathlib import Path
import fedloom

marker, overrides = Path(sys.argv[1]), sys.argv[2:]
experiment = fedloom.Experiment(fedloom.load_config(None, overrides))
transport = experiment.server.transport
fits = dict(transport.handlers)

def held(fit):
    def handle(message):
        if message.round == 4:
            marker.write_text("held")
            while True:
                time.sleep(60)
        return fit(message)
    return handle

transport.handlers = {cid: held(fit) for cid, fit in fits.items()}
experiment.run()
"""


@pytest.mark.slow
def test_killed_run_resumes_bit_identical(tmp_path):
    overrides = [*SMALL, "rounds=12", "strategy.name=fedavgm", "train.momentum=0.5"]
    reference = run(tmp_path, "reference", overrides)

    killed_dir, marker = tmp_path / "killed", tmp_path / "held"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", HELD_RUN, str(marker), *overrides, f"output_dir={killed_dir}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(marker.exists, 120, "the run reaches round 4", [proc])
        # round 3's checkpoint commits in the background while round 4 runs
        wait_until(lambda: _checkpointed(killed_dir) == 3, 60, "checkpoint 3", [proc])
        sigkill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    state = json.loads((killed_dir / "checkpoint" / "state.json").read_text())
    assert state["round"] == 3
    metrics = killed_dir / "metrics.jsonl"
    assert len(metrics.read_text().splitlines()) == 3
    assert not (killed_dir / "model.safetensors").exists()

    done = subprocess.run(_cli("resume", str(killed_dir)), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    resumed = load_file(killed_dir / "model.safetensors")
    expected = load_file(reference.run_dir / "model.safetensors")
    assert resumed.keys() == expected.keys()
    assert all(torch.equal(resumed[n], expected[n]) for n in expected)
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [m["round"] for m in lines] == list(range(1, 13))


def test_resume_extends_a_finished_run(tmp_path):
    run(tmp_path, "r", [*SMALL, "rounds=2"])
    experiment = fedloom.resume(tmp_path / "r", ["rounds=4"])
    assert experiment.server.round == 2
    result = experiment.run()
    assert [m["round"] for m in result.metrics] == [1, 2, 3, 4]


def test_cli_config_error_exits_2_and_runs_nothing(tmp_path):
    out = tmp_path / "never"
    done = subprocess.run(
        _cli("run", "train.lrr=1", "data.partition=bogus", f"output_dir={out}"),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "train.lrr" in done.stderr and "data.partition" in done.stderr
    assert not out.exists()


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def test_python_api_federates_a_custom_model_and_dataset(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(600, 2, generator=gen)
    y = (x[:, 0] + x[:, 1] > 0).long()  # linearly separable
    train, test = TensorDataset(x[:500], y[:500]), TensorDataset(x[500:], y[500:])
    result = fedloom.federate(
        TinyNet(),
        train,
        test,
        {
            "clients.num": 5,
            "clients.per_round": 5,
            "rounds": 5,
            "train.lr": 0.5,
            "data.partition": "dirichlet",
            "output_dir": str(tmp_path / "api"),
        },
    )
    assert result.summary["final_test_accuracy"] >= 0.95
    assert isinstance(result.model, TinyNet)
