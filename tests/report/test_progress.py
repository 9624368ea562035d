"""Progress output: plain lines off a terminal (CI, nohup, the API in a script), a live
bar on one; the long phases get a line or a spinner of their own."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn
from torch.utils.data import TensorDataset
from typer.testing import CliRunner

import fedloom
from fedloom.cli import app
from fedloom.report.progress import phase, quiet, round_progress

ROUND_LINE = re.compile(r"^round (\d+)/(\d+)  acc (\d\.\d{4})  loss \d+\.\d{4}  .* (\d+\.\d) s$")


def test_phase_off_a_terminal_is_one_line_when_done(capsys: pytest.CaptureFixture[str]) -> None:
    with phase("loading data"):
        pass
    assert re.fullmatch(r"loading data: \d+\.\d s\n", capsys.readouterr().err)
    with pytest.raises(RuntimeError), phase("export"):
        raise RuntimeError("boom")  # a failed phase leaves the error to speak
    with quiet(), phase("importance pass"):
        pass
    assert capsys.readouterr().err == ""


def test_phase_and_rounds_on_a_terminal_draw_a_live_bar() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100)
    with phase("privacy calibration", console=console):
        pass
    with round_progress(2, 0, "accuracy", console=console) as show:
        for rnd in (1, 2):
            show({"round": rnd, "test_accuracy": 0.5, "test_loss": 1.0, "train_loss": 1.0})
    text = screen.getvalue()
    assert "privacy calibration" in text and "2/2" in text and "acc 0.5000" in text


def test_cli_off_a_terminal_prints_phases_and_one_line_per_round(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "run",
            "model.name=logreg",
            "clients.num=4",
            "clients.per_round=2",
            "rounds=2",
            f"output_dir={tmp_path}",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(re.fullmatch(r"loading data: \d+\.\d s", line) for line in lines)
    rounds = [m.groups() for line in lines if (m := ROUND_LINE.match(line))]
    assert [(r, total) for r, total, _, _ in rounds] == [("1", "2"), ("2", "2")]
    final = [line for line in lines if line.startswith("final test accuracy")]
    assert final and rounds[-1][2] in final[0]  # the last line's accuracy is the final one


def _tiny() -> tuple[nn.Module, TensorDataset, TensorDataset]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return nn.Linear(4, 2), TensorDataset(x[:48], y[:48]), TensorDataset(x[48:], y[48:])


@pytest.mark.parametrize("verbose", [True, False])
def test_api_uses_the_same_renderer_and_verbose_false_is_silent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], verbose: bool
) -> None:
    model, train, test = _tiny()
    config = {"clients.num": 2, "rounds": 2, "output_dir": str(tmp_path)}
    fedloom.federate(model, train, test, config, verbose=verbose)
    rounds = [line for line in capsys.readouterr().err.splitlines() if ROUND_LINE.match(line)]
    assert len(rounds) == (2 if verbose else 0)
