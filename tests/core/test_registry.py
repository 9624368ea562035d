"""The component registry: registering, looking up, params, capabilities and the three
ways plugins come in (a decorator in imported code, ``plugins:``/``--import``, and the
``fedloom.plugins`` entry-point group)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

import fedloom
from fedloom.cli import take_imports
from fedloom.config import load_config
from fedloom.core.errors import ConfigError
from fedloom.core.registry import KINDS, REGISTRY, import_plugins
from fedloom.experiment import Experiment
from fedloom.server.strategy import Strategy, build_strategy


@pytest.fixture
def scratch() -> Iterator[list[tuple[str, str]]]:
    """Names registered by a test; removed afterwards so tests stay independent."""
    added: list[tuple[str, str]] = []
    yield added
    for kind, name in added:
        REGISTRY.unregister(kind, name)


class Shrink(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    factor: float = 0.5


def test_every_builtin_is_declared_and_loads() -> None:
    for kind in KINDS:
        for component in REGISTRY.components(kind):
            assert component.load() is not None, (kind, component.name)
    assert REGISTRY.names("strategy") == [
        "fedadagrad",
        "fedadam",
        "fedavg",
        "fedavgm",
        "feddf",
        "fedmd",
        "fednova",
        "fedprox",
        "fedyogi",
        "scaffold",
    ]
    assert isinstance(fedloom.lookup("strategy", "fedavg"), type)


def test_a_subclassed_fedavg_with_params_runs_and_changes_the_step(
    tmp_path: Path, scratch: list[tuple[str, str]]
) -> None:
    fedavg = fedloom.lookup("strategy", "fedavg")

    @fedloom.register("strategy", "shrunk", params=Shrink, capabilities={"central_dp"})
    class Shrunk(fedavg):  # type: ignore[misc, valid-type]
        def __init__(self, config: object, params: Shrink) -> None:
            super().__init__(config, params)
            self.factor = params.factor

        def apply(self, global_state, aggregate):  # type: ignore[no-untyped-def]
            return super().apply(global_state, {n: t * self.factor for n, t in aggregate.items()})

    scratch.append(("strategy", "shrunk"))
    base = ["model.name=logreg", "clients.num=4", "clients.per_round=4", "rounds=2"]
    cfg = load_config(None, [*base, "strategy.name=shrunk", "strategy.params.factor=0.0"])
    assert cfg.strategy.params == {"factor": 0.0}
    strategy = build_strategy(cfg.strategy)
    assert isinstance(strategy, Shrunk) and strategy.factor == 0.0
    frozen = Experiment(cfg.model_copy(update={"output_dir": str(tmp_path / "a")}))
    start = {n: t.clone() for n, t in frozen.server.global_state.items()}
    frozen.run()
    for name, t in frozen.server.global_state.items():  # factor 0: the model never moves
        assert bool((t == start[name]).all())
    with pytest.raises(ConfigError, match="params.factr"):
        load_config(None, [*base, "strategy.name=shrunk", "strategy.params.factr=1"])
    with pytest.raises(ConfigError, match="takes no params"):
        load_config(None, [*base, "strategy.params.factor=1"])


def test_capabilities_decide_compatibility(scratch: list[tuple[str, str]]) -> None:
    @fedloom.register("strategy", "plain")
    def plain(config: object, params: object) -> Strategy:
        return fedloom.lookup("strategy", "fedavg")(config, params)  # type: ignore[no-any-return]

    scratch.append(("strategy", "plain"))
    dp = ["privacy.mode=central", "privacy.noise_multiplier=1"]
    with pytest.raises(ConfigError, match="privacy.mode=central.*strategy.name=plain"):
        load_config(None, ["strategy.name=plain", *dp])
    with pytest.raises(ConfigError, match="strategy.aggregator=median.*strategy.name=plain"):
        load_config(None, ["strategy.name=plain", "strategy.aggregator=median"])
    load_config(None, ["strategy.name=fedadam", *dp])  # declares central_dp


def test_unknown_names_list_the_registered_ones_with_a_hint() -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(None, ["strategy.name=fedprxo", "model.name=cnnn", "attack.kind=flip"])
    text = str(refused.value)
    assert "strategy.name: 'fedprxo' is not registered (did you mean 'fedprox'?)" in text
    assert "registered: fedadagrad, fedadam, fedavg" in text
    assert "attack.kind: 'flip' is not registered" in text
    with pytest.raises(ValueError, match="already registered"):
        fedloom.register("strategy", "fedavg")(object)
    with pytest.raises(ValueError, match="unknown component kind"):
        fedloom.register("optimizer", "x")


PLUGIN = """
import fedloom

FedAvg = fedloom.lookup("strategy", "fedavg")


@fedloom.register("strategy", "{name}", capabilities={{"central_dp"}})
class Mine(FedAvg):
    pass
"""


def test_plugins_in_a_config_and_import_twice(
    tmp_path: Path, scratch: list[tuple[str, str]]
) -> None:
    path = tmp_path / "my_plugin.py"
    path.write_text(PLUGIN.format(name="from_file"))
    scratch.append(("strategy", "from_file"))
    cfg = load_config(None, [f"plugins=[{path}]", "strategy.name=from_file"])
    assert cfg.plugins == [str(path)]
    import_plugins([str(path)])  # the same file again: no second registration
    with pytest.raises(ConfigError, match="could not be imported"):
        import_plugins([str(tmp_path / "missing.py")])
    with pytest.raises(ConfigError, match="could not be imported"):
        import_plugins(["no_such_module_anywhere"])


def test_import_is_taken_from_any_place_on_the_command_line() -> None:
    argv = ["run", "--import", "a.py", "rounds=2", "--import=b", "strategy.name=x"]
    assert take_imports(argv) == (["a.py", "b"], ["run", "rounds=2", "strategy.name=x"])


def test_an_installed_packages_entry_point_adds_its_components(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scratch: list[tuple[str, str]]
) -> None:
    (tmp_path / "fedloom_demo_plugin.py").write_text(PLUGIN.format(name="from_entry_point"))
    dist = tmp_path / "fedloom_demo_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fedloom-demo-plugin\n")
    (dist / "entry_points.txt").write_text("[fedloom.plugins]\ndemo = fedloom_demo_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(REGISTRY, "_plugins_loaded", False)
    scratch.append(("strategy", "from_entry_point"))
    assert "from_entry_point" in REGISTRY.names("strategy")
    load_config(None, ["strategy.name=from_entry_point"])
    sys.modules.pop("fedloom_demo_plugin", None)


def test_run_records_command_line_imports_so_resume_needs_none(tmp_path: Path) -> None:
    from fedloom.cli import recording_plugins

    cfg = load_config(None, ["plugins=[json]"])  # any importable module
    recorded = recording_plugins(cfg, ["rel/plugin.py", "json", "other.mod"])
    assert recorded.plugins == ["json", str(Path("rel/plugin.py").resolve()), "other.mod"]
    assert recording_plugins(cfg, []) is cfg


def test_a_client_imports_no_code_its_config_names_unless_told_to(
    tmp_path: Path, scratch: list[tuple[str, str]]
) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "extra.py").write_text(PLUGIN.format(name="beside_config"))
    (folder / "fed.yaml").write_text("plugins: [extra.py]\nstrategy:\n  name: beside_config\n")
    with pytest.raises(ConfigError, match="a client runs code only from its own command line"):
        load_config(folder / "fed.yaml", import_code=False)
    scratch.append(("strategy", "beside_config"))
    cfg = load_config(folder / "fed.yaml")  # found beside the file, not in the cwd
    assert cfg.plugins == [str(folder / "extra.py")]
    assert load_config(folder / "fed.yaml", import_code=False).strategy.name == "beside_config"
