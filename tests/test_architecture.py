"""The import structure of ``src/fedloom``: no cycles, lazy packages, a torch-free config.

The graphs are read from the source with ``ast`` (module-level imports only: imports
inside functions and under ``if TYPE_CHECKING:`` do not run when a module is imported),
so these checks cost one parse of the tree, not an interpreter per module.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from collections.abc import Iterator
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import fedloom

SRC = Path(fedloom.__file__).resolve().parent
Graph = dict[str, set[str]]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _parse_all() -> dict[str, tuple[Path, ast.Module]]:
    return {
        _module_name(path): (path, ast.parse(path.read_text(), filename=str(path)))
        for path in sorted(SRC.rglob("*.py"))
    }


MODULES = _parse_all()


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _runtime_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _runtime_imports(node.body)
            yield from _runtime_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _runtime_imports(block)
            for handler in node.handlers:
                yield from _runtime_imports(handler.body)
        elif isinstance(node, ast.With | ast.ClassDef):
            yield from _runtime_imports(node.body)


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The fedloom modules an import statement executes (besides parent packages)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name.split(".")[0] == "fedloom"}
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, base]) if base else ".".join(anchor)
    if base.split(".")[0] != "fedloom":
        return set()
    found = {base}
    found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES)
    return found


def module_graph() -> Graph:
    graph: Graph = {}
    for name, (path, tree) in MODULES.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in _runtime_imports(tree.body):
            edges |= _targets(name, is_package, node)
        graph[name] = edges - {name}
    return graph


SUBPACKAGES = {path.parent.name for path in SRC.glob("*/__init__.py")}


def _package(module: str) -> str | None:
    """``fedloom.X`` for a module inside subpackage X; None for a top-level module."""
    parts = module.split(".")
    return f"fedloom.{parts[1]}" if len(parts) > 1 and parts[1] in SUBPACKAGES else None


def package_graph(graph: Graph) -> Graph:
    """Edges between subpackages ``fedloom.X``.

    Top-level modules (``config``, ``experiment``, ``features``, ``parts``, ``api``,
    ``cli``) assemble the subpackages and are not layers; the module graph covers them.
    """
    packages: Graph = {f"fedloom.{name}": set() for name in SUBPACKAGES}
    for module, targets in graph.items():
        source = _package(module)
        if source is not None:
            packages[source].update(
                p for p in map(_package, targets) if p is not None and p != source
            )
    return packages


def find_cycle(graph: Graph) -> list[str] | None:
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as error:
        return list(error.args[1])
    return None


def _witness(cycle: list[str]) -> str:
    """For a package cycle, the module imports that make each of its edges."""
    lines = []
    for source, target in zip(cycle, cycle[1:], strict=False):
        for module, targets in sorted(MODULES_GRAPH.items()):
            if _package(module) != source:
                continue
            hits = sorted(t for t in targets if _package(t) == target)
            if hits:
                lines.append(f"  {module} -> {', '.join(hits)}")
    return "\n".join(lines)


MODULES_GRAPH = module_graph()


def test_graph_sees_known_edges() -> None:
    # guards the parser itself: a silent empty graph would pass every cycle check
    assert "fedloom.client.config" in MODULES_GRAPH
    assert "fedloom.client.config" in MODULES_GRAPH["fedloom.client.trainer"]
    assert "fedloom.core.errors" in MODULES_GRAPH["fedloom.config"]
    # a TYPE_CHECKING import is not an edge; the lazy helper is
    assert MODULES_GRAPH["fedloom"] == {"fedloom.core.lazy"}
    assert MODULES_GRAPH["fedloom.server"] == set()  # subpackages export nothing


def test_package_graph_joins_modules_into_subpackages() -> None:
    graph = package_graph(
        {
            "fedloom.config": {"fedloom.server.config"},
            "fedloom.server.server": {"fedloom.server.sampler", "fedloom.core.errors"},
            "fedloom.server.sampler": {"fedloom.core.seeding"},
            "fedloom.core.errors": set(),
        }
    )
    assert graph["fedloom.server"] == {"fedloom.core"}
    assert graph["fedloom.core"] == set()
    assert "fedloom.config" not in graph


def test_cycle_finder_reports_a_cycle() -> None:
    cycle = find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert cycle is not None and cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_module_import_graph_has_no_cycle() -> None:
    cycle = find_cycle(MODULES_GRAPH)
    assert cycle is None, "module import cycle: " + " -> ".join(cycle or [])


def test_package_import_graph_has_no_cycle() -> None:
    graph = package_graph(MODULES_GRAPH)
    cycle = find_cycle(graph)
    assert cycle is None, (
        "package import cycle: " + " -> ".join(cycle or []) + "\n" + _witness(cycle or [])
    )


def _lazy_packages() -> list[str]:
    return sorted(
        name
        for name, (path, tree) in MODULES.items()
        if path.name == "__init__.py" and any(_assigns_exports(node) for node in tree.body)
    )


def _assigns_exports(node: ast.stmt) -> bool:
    return isinstance(node, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets
    )


def _exports_literal(tree: ast.Module) -> dict[str, str]:
    node = next(n for n in tree.body if _assigns_exports(n))
    assert isinstance(node, ast.Assign)
    value = ast.literal_eval(node.value)
    assert isinstance(value, dict)
    return value


def _type_checking_imports(tree: ast.Module) -> dict[str, str]:
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom) and stmt.module:
                    found.update({alias.name: stmt.module for alias in stmt.names})
    return found


def test_only_the_root_package_exports_names() -> None:
    # ``fedloom`` is the public API (served lazily); a subpackage's names are imported
    # from the module that defines them, so importing a leaf loads nothing else
    assert _lazy_packages() == ["fedloom"]
    for name, (path, tree) in MODULES.items():
        if path.name == "__init__.py" and name != "fedloom":
            assert all(isinstance(n, ast.Expr) for n in tree.body), f"{name} runs code"


@pytest.mark.parametrize("package", _lazy_packages())
def test_lazy_exports_match_type_checking_imports(package: str) -> None:
    # the static names type checkers see are the names served at run time
    path, tree = MODULES[package]
    exports = _exports_literal(tree)
    wanted = "\n".join(
        f"    from {module} import {name} as {name}"
        for module, name in sorted((m, n) for n, m in exports.items())
    )
    assert _type_checking_imports(tree) == exports, (
        f"{path.relative_to(SRC.parent)}: type checkers need the lazy names spelled out\n"
        f"if TYPE_CHECKING:\n{wanted}"
    )


@pytest.mark.parametrize("package", _lazy_packages())
def test_every_lazy_export_resolves(package: str) -> None:
    module = importlib.import_module(package)
    exports = _exports_literal(MODULES[package][1])
    assert sorted(module.__all__) == sorted(exports)
    for name, source in exports.items():
        value = getattr(module, name)
        assert value is getattr(importlib.import_module(source), name)
        assert name in dir(module)
    with pytest.raises(AttributeError, match="no attribute 'not_an_export'"):
        _ = module.not_an_export


def test_submodule_import_does_not_shadow_an_export() -> None:
    # ``from pkg.tool import tool`` used to rebind the name after the submodule bound it;
    # a lazy package must keep the function, as the eager one did
    import types

    from fedloom.core.lazy import lazy_exports

    package = types.ModuleType("fedloom._lazy_probe")
    sub = types.ModuleType("fedloom._lazy_probe.tool")
    vars(sub)["tool"] = lambda: 42
    sys.modules[package.__name__], sys.modules[sub.__name__] = package, sub
    try:
        getattr_, dir_ = lazy_exports(package.__name__, {"tool": sub.__name__})
        vars(package).update(__getattr__=getattr_, __dir__=dir_)
        package.tool = sub  # what the import system does after importing the submodule
        assert package.tool() == 42
        package.other = sub  # any other binding is untouched
        assert package.other is sub
    finally:
        del sys.modules[package.__name__], sys.modules[sub.__name__]


def test_train_config_is_a_leaf_still_served_by_the_trainer() -> None:
    from fedloom.client import config, trainer

    # a config section imports nothing of its own feature: only the torch-free registry
    assert MODULES_GRAPH["fedloom.client.config"] == {"fedloom.core.registry"}
    assert trainer.TrainConfig is config.TrainConfig
    assert config.TrainConfig(lr=0.5).lr == 0.5


def test_lazy_export_needs_an_absolute_module() -> None:
    from fedloom.core.lazy import lazy_exports

    with pytest.raises(ValueError, match="absolute module path"):
        lazy_exports("fedloom.client", {"Client": ".client"})


# Passes once every config section, the registry and its built-in declarations import no
# torch: then ``fedloom run --help`` and config validation start in a fraction of a second.
TORCH_FREE_CONFIG = """
import sys
import fedloom.config
import fedloom.core.registry
cfg = fedloom.config.load_config(None, ["rounds=3"])
assert cfg.rounds == 3, cfg.rounds
heavy = sorted(m for m in ("torch", "numpy", "matplotlib", "sklearn") if m in sys.modules)
print(",".join(heavy))
"""


def test_loading_a_config_imports_no_torch() -> None:
    done = subprocess.run(
        [sys.executable, "-c", TORCH_FREE_CONFIG],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "torch" not in done.stdout.strip().split(","), (
        "validating a config imported: " + done.stdout.strip()
    )
