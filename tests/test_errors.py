"""User errors explain themselves in a line or two: YAML syntax, divergence."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedloom.cli import app
from fedloom.config import load_config
from fedloom.core.errors import ConfigError, Diverged
from fedloom.experiment import Experiment


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "fed.yaml"
    path.write_text("rounds: 3\ntrain:\n  lr: [0.1\n  batch_size: 4\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    (problem,) = refused.value.problems
    assert problem.startswith(f"{path}:4: YAML syntax error")
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 3
    with pytest.raises(ConfigError, match="override 'rounds=\\[': YAML syntax error"):
        load_config(None, ["rounds=["])


def test_divergence_stops_the_run_with_a_hint(tmp_path: Path) -> None:
    config = ["model.name=logreg", "clients.num=4", "rounds=3", "train.lr=1e30"]
    experiment = Experiment(load_config(None, [*config, f"output_dir={tmp_path}"]))
    with pytest.raises(Diverged, match="non-finite in round 1.*lower train.lr"):
        experiment.run()
    result = CliRunner().invoke(app, ["run", *config, f"output_dir={tmp_path / 'cli'}"])
    assert result.exit_code == 1 and "non-finite in round 1" in result.output


def test_a_pickled_model_checkpoint_says_to_save_a_state_dict(tmp_path: Path) -> None:
    import torch
    from torch import nn

    path = tmp_path / "model.pt"
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), path)
    result = CliRunner().invoke(app, ["run", "model.name=logreg", f"model.checkpoint={path}"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "torch.save(model.state_dict(), path)" in " ".join(result.output.split())
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot be read"):
        Experiment(
            load_config(None, ["model.name=logreg", f"model.checkpoint={tmp_path / 'broken.pt'}"])
        )


def test_a_failing_client_leaves_its_traceback_in_clients_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedloom.client.client import Client

    real = Client.handle

    def handle(self: Client, message):  # type: ignore[no-untyped-def]
        if self.client_id == "2":
            raise KeyError("no such column: age")
        return real(self, message)

    monkeypatch.setattr(Client, "handle", handle)
    config = ["model.name=logreg", "clients.num=4", "rounds=2", f"output_dir={tmp_path}"]
    result = Experiment(load_config(None, config)).run()
    assert [m["num_failed"] for m in result.metrics] == [1, 1]
    text = (tmp_path / "clients.log").read_text()
    assert text.count("Traceback (most recent call last)") == 2
    assert "client 2, round 1" in text and "KeyError: 'no such column: age'" in text
