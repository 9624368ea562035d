"""Lazy package exports (PEP 562): a package names what it offers without importing it.

A package ``__init__`` that imports its torch-heavy modules makes every leaf module
under it pay for torch. Instead it declares where each public name lives::

    from fedloom.core.lazy import lazy_exports

    _EXPORTS = {
        "Server": "fedloom.server.server",
        "weighted_mean": "fedloom.server.aggregate",
    }
    __all__ = sorted(_EXPORTS)
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

and the defining module is imported the first time one of its names is looked up.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


class _LazyPackage(types.ModuleType):
    """A package whose exports are not shadowed by a submodule of the same name.

    Importing ``pkg.partition`` binds the submodule as ``pkg.partition``; when the
    package exports a function ``partition`` (from that very submodule), the eager
    ``from pkg.partition import partition`` used to rebind it. Lazily, nothing would,
    so the binding is refused here and the export keeps its name.
    """

    __lazy_exports__: dict[str, str]

    def __setattr__(self, name: str, value: Any) -> None:
        table = self.__dict__.get("__lazy_exports__", {})
        is_submodule = isinstance(value, types.ModuleType) and (
            value.__name__ == f"{self.__name__}.{name}"
        )
        if is_submodule and name in table:
            return
        super().__setattr__(name, value)


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return a module ``__getattr__`` and ``__dir__`` serving ``exports`` on demand.

    ``package`` is the calling package's ``__name__``; ``exports`` maps each public
    name to the absolute module that defines it. A value is cached in the package
    namespace after its first lookup, so later accesses are plain attribute reads.
    The package module is switched to a subclass that keeps a submodule import from
    shadowing an export of the same name.
    """
    table = dict(exports)
    for name, module in table.items():
        if not module or module.startswith("."):
            raise ValueError(f"lazy export {name!r} of {package} needs an absolute module path")
    package_module = sys.modules[package]
    package_module.__class__ = _LazyPackage
    package_module.__dict__["__lazy_exports__"] = table

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        package_module.__dict__[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(package_module)) | table.keys())

    return __getattr__, __dir__
