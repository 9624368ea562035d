"""One open registry per extension point.

A component is registered under a *kind* and a *name*; config values name components
(``strategy.name=fedadam``) and are checked against the registry when the config is
validated. Three ways in, one store:

- fedloom's own components are declared in ``fedloom.builtins`` as ``"module:attr"``
  targets, imported only when used, so validating a config imports no torch;
- ``@fedloom.register(kind, name)`` in a user's module (``--import my_module`` on the
  command line, ``plugins: [my_module]`` in YAML, or a plain import before ``federate``);
- a pip-installed package's ``fedloom.plugins`` entry points, loaded the first time a
  kind's names are needed.

Each kind's contract (what the registered object is called with) is in ``KINDS``. A
component may declare a pydantic ``params`` model (its values sit under
``<section>.params`` in the config) and ``capabilities``: flags such as ``lossy`` or
``central_dp`` that compatibility checks read instead of lists of names.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from fedloom.core.errors import ConfigError

log = logging.getLogger(__name__)

KINDS: dict[str, str] = {
    "strategy": "factory(config: StrategyConfig, params) -> Strategy",
    "aggregator": "factory(config: StrategyConfig, params=None) -> (() -> Aggregator)",
    "codec": "factory(arg: str | None, ctx: CodecContext) -> Codec",
    "model": "factory(input_shape: tuple[int, ...], num_classes: int) -> nn.Module",
    "dataset": "loader(cfg: DataConfig, num_clients: int, seed: int) -> LoadedData",
    "partitioner": "fn(labels: ndarray, num_clients: int, rng, *, options) -> [index tensor]",
    "attack": "fn(update: Tensors, ctx: FitContext, config: AttackConfig) -> Tensors",
    "trainer": "factory(config: TrainConfig, loss) -> LocalTrainer (loss: the task's)",
    "task": "factory() -> Task (loss, metrics, how to read a model's output)",
    "logger": "factory(run_dir: Path) -> MetricsLogger (log(metrics), close(); optional "
    "start(config), log_histogram(name, values, step), finish(artifacts))",
}
"""Every extension point and the call its components must accept."""

ENTRY_POINT_GROUP = "fedloom.plugins"

T = TypeVar("T")


@dataclass(frozen=True)
class Component:
    """A registered component: the object, or a ``"module:attr"`` text resolved on use."""

    kind: str
    name: str
    target: Any
    params: Any = None
    """A pydantic model of the component's own settings (or its ``"module:attr"``)."""
    capabilities: frozenset[str] = frozenset()
    meta: Mapping[str, Any] = field(default_factory=dict)
    """Facts a kind's checks read before building (e.g. a model's ``input_ndim``)."""

    def load(self) -> Any:
        return _resolve(self.target)

    def params_model(self) -> Any:
        return None if self.params is None else _resolve(self.params)


def _resolve(target: Any) -> Any:
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


class Registries:
    """The store behind ``register``/``lookup``: kind -> name -> ``Component``."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
        self._replaced: dict[tuple[str, str], Component] = {}
        self._builtins_loaded = False
        self._plugins_loaded = False

    def add(self, component: Component, *, replace: bool = False) -> None:
        self._load_builtins()
        kind = self._kind(component.kind)
        if component.name in kind and not replace:
            raise ValueError(f"{component.kind} {component.name!r} is already registered")
        if component.name in kind:
            self._replaced.setdefault((component.kind, component.name), kind[component.name])
        kind[component.name] = component

    def register(
        self,
        kind: str,
        name: str,
        *,
        params: Any = None,
        capabilities: Iterable[str] = (),
        replace: bool = False,
        **meta: Any,
    ) -> Callable[[T], T]:
        """Decorator: ``@register("strategy", "mine")`` on a class or factory."""
        self._kind(kind)  # an unknown kind fails here, not when the decorator runs

        def add(obj: T) -> T:
            self.add(
                Component(kind, name, obj, params, frozenset(capabilities), meta), replace=replace
            )
            return obj

        return add

    def unregister(self, kind: str, name: str) -> None:
        """Remove a registered component (e.g. a test's), restoring the one it replaced;
        ``KeyError`` if there is none."""
        self._load_builtins()
        del self._kind(kind)[name]
        replaced = self._replaced.pop((kind, name), None)
        if replaced is not None:
            self._kind(kind)[name] = replaced

    def component(self, kind: str, name: str, key: str | None = None) -> Component:
        """The component, or a ``ConfigError`` for ``key`` listing the registered names."""
        self._load_plugins()
        found = self._kind(kind).get(name)
        if found is None:
            raise ConfigError([unknown_name(key or kind, name, self.names(kind))])
        return found

    def lookup(self, kind: str, name: str) -> Any:
        """The registered object itself (to call, or to subclass)."""
        return self.component(kind, name).load()

    def names(self, kind: str) -> list[str]:
        self._load_plugins()
        return sorted(self._kind(kind))

    def components(self, kind: str) -> list[Component]:
        self._load_plugins()
        return [self._kind(kind)[n] for n in sorted(self._kind(kind))]

    def _kind(self, kind: str) -> dict[str, Component]:
        try:
            return self._items[kind]
        except KeyError:
            raise ValueError(f"unknown component kind {kind!r}; kinds: {list(KINDS)}") from None

    def _load_builtins(self) -> None:
        if not self._builtins_loaded:
            self._builtins_loaded = True
            importlib.import_module("fedloom.builtins")  # declarations only: no torch

    def _load_plugins(self) -> None:
        self._load_builtins()
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        from importlib.metadata import entry_points

        for point in entry_points(group=ENTRY_POINT_GROUP):
            try:
                point.load()
            except Exception as error:  # a broken third-party plugin must not stop fedloom
                log.warning("plugin %s (%s) failed to load: %r", point.name, point.value, error)


def unknown_name(key: str, name: object, allowed: list[str]) -> str:
    close = difflib.get_close_matches(str(name), allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{key}: {name!r} is not registered{hint}; registered: {', '.join(allowed)}"


REGISTRY = Registries()
register = REGISTRY.register
lookup = REGISTRY.lookup


def registered(kind: str, name: str) -> str:
    """``name`` if a ``kind`` component is registered under it; else a ValueError listing
    the registered names (a config validator's message)."""
    allowed = REGISTRY.names(kind)
    if name not in allowed:
        raise ValueError(unknown_name(kind, name, allowed).partition(": ")[2])
    return name


def checked_params(kind: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` validated by the component's own pydantic model (defaults filled in);
    a component without one takes no params."""
    model = REGISTRY.component(kind, name).params_model()
    if model is None:
        if params:
            raise ValueError(f"{kind} {name!r} takes no params, got {sorted(params)}")
        return {}
    try:
        return dict(model.model_validate(params).model_dump())
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{kind} {name!r}: params.{where}: {first['msg']}") from None


def is_plugin_file(item: str) -> bool:
    """A plugin given as a path to a ``.py`` file (else a module name)."""
    return item.endswith(".py") or "/" in item


def plugin_key(item: str) -> str:
    """How a plugin is recorded: a file as its absolute path, a module as its name."""
    return str(Path(item).resolve()) if is_plugin_file(item) else item


IMPORTED: set[str] = set()
"""The plugins imported in this process (``plugin_key``)."""


def import_plugins(modules: Iterable[str]) -> None:
    """Import user modules that register components: a module name (``my_pkg.plugin``)
    or a path to a ``.py`` file. A module that cannot be imported is a ``ConfigError``."""
    for item in modules:
        try:
            if is_plugin_file(item):
                _import_file(Path(item))
            else:
                importlib.import_module(item)
        except ConfigError:
            raise
        except Exception as error:
            raise ConfigError([f"plugin {item!r} could not be imported: {error!r}"]) from None
        IMPORTED.add(plugin_key(item))


def _import_file(path: Path) -> None:
    path = path.resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no file {path}")
    name = f"fedloom_plugin_{path.stem}"
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        return  # already imported: registering twice would be an error
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
