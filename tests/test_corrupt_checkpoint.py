"""A run directory's files are input too: an edited or broken checkpoint is a one-line
error on resume, never a traceback, a read outside the run, or a model of another shape."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from fedloom.cli import app
from fedloom.config import load_config
from fedloom.core.errors import FedloomError
from fedloom.experiment import Experiment, resume

TINY = ["model.name=logreg", "clients.num=3", "clients.per_round=3", "rounds=1"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    Experiment(load_config(None, [*TINY, f"output_dir={out}"])).run()
    return out


@pytest.fixture
def run_dir(finished: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "run"))


def _edit_state(run_dir: Path, **changes: object) -> None:
    path = run_dir / "checkpoint" / "state.json"
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "changes",
    [
        {"tensors": "../../../etc/passwd"},
        {"round": "1"},
        {"round": -1},
        {"clients": "0"},
        {"extra": []},
        {"tensors": "tensors-000009.safetensors"},  # a file that is not there
    ],
)
def test_an_edited_state_file_is_a_clear_error(run_dir, changes):
    _edit_state(run_dir, **changes)
    with pytest.raises(FedloomError, match="corrupt checkpoint"):
        resume(run_dir, ["rounds=2"])


def test_a_state_file_that_is_not_json_is_a_clear_error(run_dir):
    (run_dir / "checkpoint" / "state.json").write_text("{not json")
    with pytest.raises(FedloomError, match="corrupt checkpoint"):
        resume(run_dir, ["rounds=2"])


def test_truncated_tensors_and_another_models_tensors_are_refused(run_dir):
    (tensors,) = (run_dir / "checkpoint").glob("tensors-*.safetensors")
    saved = load_file(tensors)
    tensors.write_bytes(tensors.read_bytes()[:40])
    with pytest.raises(FedloomError, match="corrupt checkpoint tensors"):
        resume(run_dir, ["rounds=2"])
    save_file({k: v[..., :3].contiguous() for k, v in saved.items()}, tensors)
    with pytest.raises(FedloomError, match="does not hold this run's model"):
        resume(run_dir, ["rounds=2"])


def test_the_cli_says_so_in_one_line(run_dir):
    _edit_state(run_dir, tensors="../x")
    done = CliRunner(env={"COLUMNS": "1000"}).invoke(app, ["resume", str(run_dir), "rounds=2"])
    assert done.exit_code == 1
    assert "corrupt checkpoint" in done.output and "Traceback" not in done.output
