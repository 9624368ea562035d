"""A resume may change only what cannot change the maths; it records what it changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import fedloom
from fedloom.cli import app
from fedloom.config import load_config, to_yaml
from fedloom.core.errors import ConfigError
from fedloom.experiment import Experiment
from fedloom.network.server import server_experiment
from fedloom.rundir import RESUMABLE, SERVER_RESUMABLE, allowed_changes

from .network.conftest import network_overrides

TINY = [
    "model.name=logreg",
    "clients.num=3",
    "clients.per_round=3",
    "train.local_epochs=1",
    "train.batch_size=32",
    "seed=5",
]


def _cli(*args: str):
    return CliRunner(env={"COLUMNS": "1000"}).invoke(app, list(args))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A two-round run to resume (each test copies it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    Experiment(load_config(None, [*TINY, "rounds=2", f"output_dir={out}"])).run()
    return out


@pytest.fixture
def run_dir(finished: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(finished, tmp_path / "run"))


def _resumes(run_dir: Path) -> list[dict]:
    path = run_dir / "resumes.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_cli_resume_refuses_unsafe_changes_and_lists_them(run_dir):
    config_before = (run_dir / "config.yaml").read_text()
    done = _cli("resume", str(run_dir), "rounds=3", "train.lr=0.5", "clients.num=4", "seed=6")
    assert done.exit_code == 2, done.output
    for line in ("train.lr: 0.05 -> 0.5", "clients.num: 3 -> 4", "seed: 5 -> 6"):
        assert line in done.output
    assert "rounds" not in done.output.split("a resume may change only")[0]
    assert "a resume may change only eval_every, privacy.max_epsilon, rounds" in done.output
    assert (run_dir / "config.yaml").read_text() == config_before and _resumes(run_dir) == []


def test_changing_the_model_on_resume_is_a_config_error_not_a_traceback(run_dir):
    done = _cli("resume", str(run_dir), "model.name=mlp_2nn")
    assert done.exit_code == 2
    assert "model.name: 'logreg' -> 'mlp_2nn'" in done.output


def test_accepted_changes_are_recorded_and_saved_in_config_yaml(run_dir):
    # seed=5 is the saved value: the resolved configs are compared, not the strings
    done = _cli("resume", str(run_dir), "rounds=3", "seed=5", "eval_every=2")
    assert done.exit_code == 0, done.output
    (line,) = _resumes(run_dir)
    assert line["after_round"] == 2
    assert line["changes"] == {"eval_every": [1, 2], "rounds": [2, 3]}
    saved = load_config(run_dir / "config.yaml")
    assert (saved.rounds, saved.eval_every, saved.seed) == (3, 2, 5)
    assert [m["round"] for m in fedloom.resume(run_dir).run().metrics] == [1, 2, 3]
    assert _resumes(run_dir)[1] == {**_resumes(run_dir)[1], "after_round": 3, "changes": {}}


def test_rounds_below_the_checkpoint_are_refused(run_dir):
    with pytest.raises(ConfigError, match="already past round 2"):
        fedloom.resume(run_dir, ["rounds=1"])


def _saved(tmp_path: Path, overrides: list[str]) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.yaml").write_text(to_yaml(load_config(None, overrides)))
    return tmp_path


def test_rounds_are_frozen_when_the_noise_was_calibrated_to_them(tmp_path):
    dp = ["privacy.mode=central", "clients.num=10", "clients.per_round=5"]
    calibrated = _saved(tmp_path / "a", [*dp, "privacy.target_epsilon=3", "rounds=5"])
    with pytest.raises(ConfigError, match="calibrated the noise to 5 rounds"):
        allowed_changes(calibrated, load_config(calibrated / "config.yaml", ["rounds=10"]))
    new = load_config(calibrated / "config.yaml", ["privacy.max_epsilon=2.5", "eval_every=3"])
    assert allowed_changes(calibrated, new) == {
        "eval_every": (1, 3),
        "privacy.max_epsilon": (None, 2.5),
    }
    fixed = _saved(tmp_path / "b", [*dp, "privacy.noise_multiplier=1.0", "rounds=5"])
    assert allowed_changes(fixed, load_config(fixed / "config.yaml", ["rounds=10"])) == {
        "rounds": (5, 10)
    }


def test_network_settings_change_only_on_the_servers_resume_path(tmp_path):
    saved = _saved(tmp_path, ["network.address=127.0.0.1:5000"])
    moved = load_config(saved / "config.yaml", ["network.address=127.0.0.1:6000"])
    with pytest.raises(ConfigError, match="network.address"):
        allowed_changes(saved, moved, RESUMABLE)
    assert allowed_changes(saved, moved, SERVER_RESUMABLE) == {
        "network.address": ("127.0.0.1:5000", "127.0.0.1:6000")
    }
    weighted = load_config(saved / "config.yaml", ["network.min_clients=2"])
    with pytest.raises(ConfigError, match="network.min_clients"):
        allowed_changes(saved, weighted, SERVER_RESUMABLE)


def test_the_server_resumes_only_the_same_federation(tmp_path):
    run = tmp_path / "run"
    overrides = [*TINY, "rounds=2", *network_overrides(tmp_path, 3), f"output_dir={run}"]
    Experiment(load_config(None, overrides)).run()  # a simulated run lays out round 1..2

    resumed = server_experiment(None, [*overrides, "rounds=3", "network.poll_s=2"])
    assert resumed.server.round == 2
    (line,) = _resumes(run)
    assert line["changes"] == {
        "network.mode": ["simulation", "grpc"],
        "network.poll_s": [1.0, 2.0],
        "rounds": [2, 3],
    }

    with pytest.raises(ConfigError) as error:
        server_experiment(None, [*overrides, "train.lr=0.5", "data.partition=dirichlet"])
    message = str(error.value)
    assert f"output_dir {run} holds a different federation" in message
    assert "train.lr: 0.05 -> 0.5" in message and "data.partition: None -> 'dirichlet'" in message

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not a run")
    with pytest.raises(ConfigError, match=f"output_dir {other} is not empty and holds no"):
        server_experiment(None, [*overrides[:-1], f"output_dir={other}"])


def test_the_server_starts_in_a_folder_holding_only_its_own_inputs(tmp_path):
    run = tmp_path / "run"
    (run / "network").mkdir(parents=True)
    net = network_overrides(run / "network", 3)  # tokens inside the run dir, as deploy-local does
    (run / "network" / "client-0.log").write_text("a client's log beside its tokens")
    experiment = server_experiment(None, [*TINY, "rounds=1", *net, f"output_dir={run}"])
    assert experiment.server.round == 0 and experiment.run_dir_ready


@pytest.mark.parametrize(
    ("saved", "override", "listed"),
    [
        (
            ["privacy.target_epsilon=3"],
            "privacy.target_epsilon=2",
            "privacy.target_epsilon: 3.0 -> 2.0",
        ),
        (["privacy.target_epsilon=3"], "privacy.mode=none", "privacy.mode: 'central' -> 'none'"),
        (
            [],
            "privacy.mode=central privacy.noise_multiplier=1",
            "privacy.mode: 'none' -> 'central'",
        ),
        (["privacy.noise_multiplier=1.0"], "privacy.noise_multiplier=0.5", "noise_multiplier"),
    ],
)
def test_a_resume_never_changes_the_privacy_mechanism(tmp_path, saved, override, listed):
    """A new target ε would overshoot (the rounds run were noised for the old one), and a
    changed mode would drop or invent an accountant: all refused, exit 2, listed."""
    mode = ["privacy.mode=central"] if saved else []
    run_dir = _saved(tmp_path / "run", [*TINY, *mode, *saved, "rounds=2"])
    done = _cli("resume", str(run_dir), *override.split())
    assert done.exit_code == 2, done.output
    assert listed in done.output
