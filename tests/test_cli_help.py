"""Help that answers fast and lists every key; a version; clients.fraction."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest
from typer.testing import CliRunner

from fedloom.cli import app
from fedloom.config import FedConfig, load_config
from fedloom.confighelp import keys, section_keys
from fedloom.core.errors import ConfigError


def test_the_command_line_loads_without_torch() -> None:
    # what `fedloom --help` imports; torch is loaded only by a command that runs something
    code = "import sys, fedloom.cli; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_version_and_config_help() -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["--version"]).output.strip() == f"fedloom {version('fedloom')}"
    shown = runner.invoke(app, ["config", "train"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0
    assert "train.lr" in shown.output and "Local SGD learning rate" in shown.output
    assert "privacy.mode" not in shown.output
    bad = runner.invoke(app, ["config", "trian"])
    assert bad.exit_code == 2 and "sections: " in bad.output


def test_every_key_is_listed_with_a_doc() -> None:
    listed = {k.name: k for k in keys()}
    assert len(listed) > 100
    assert listed["rounds"].default == "20" and listed["rounds"].type == "int"
    assert listed["privacy.mode"].type == "none|central|local|dpsgd|distributed"
    undocumented = [k.name for k in listed.values() if not k.doc]
    assert undocumented == []
    assert {k.name.split(".")[0] for k in section_keys("network")} == {"network"}
    assert set(FedConfig.model_fields) <= {k.name.split(".")[0] for k in listed.values()}


def test_clients_fraction_or_per_round() -> None:
    assert load_config(None, ["clients.num=5"]).clients.per_round == 5  # min(10, num)
    assert load_config(None, []).clients.per_round == 10
    assert load_config(None, ["clients.num=30", "clients.fraction=0.1"]).clients.per_round == 3
    assert load_config(None, ["clients.num=30", "clients.fraction=0.01"]).clients.per_round == 1
    with pytest.raises(ConfigError, match="exactly one of clients.fraction and clients.per_round"):
        load_config(None, ["clients.num=30", "clients.fraction=0.1", "clients.per_round=4"])
    with pytest.raises(ConfigError, match="clients.fraction"):
        load_config(None, ["clients.fraction=1.5"])


def test_progress_is_a_line_per_round_off_a_terminal(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(
        app, ["run", "model.name=logreg", "clients.num=3", "rounds=2", f"output_dir={tmp_path}"]
    )
    lines = [line for line in result.output.splitlines() if line.startswith("round ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]
    assert "acc " in lines[0] and lines[0].endswith(" s")
