"""``fedloom pretrain`` writes a checkpoint that ``model.checkpoint`` loads."""

from safetensors.torch import load_file
from typer.testing import CliRunner

from fedloom.cli import app
from fedloom.config import load_config
from fedloom.experiment import Experiment


def test_pretrain_command_writes_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "pre.safetensors"
    args = [
        "pretrain",
        "model.name=logreg",
        "data.classes=[0,1]",
        "--epochs",
        "2",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output
    weights = load_file(out)
    assert {n: tuple(t.shape) for n, t in weights.items()} == {
        "1.weight": (10, 64),
        "1.bias": (10,),
    }
    cfg = load_config(
        None, ["model.name=logreg", f"model.checkpoint={out}", f"output_dir={tmp_path}/r"]
    )
    model = Experiment(cfg).model
    assert all(model.state_dict()[n].equal(t) for n, t in weights.items())


def test_pretrain_reports_config_errors():
    result = CliRunner().invoke(app, ["pretrain", "data.classes=[12]"])
    assert result.exit_code == 1 and "data.classes [12]" in result.output
