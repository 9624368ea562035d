"""``fedloom config [SECTION]``: every config key with its type, default and one-line doc,
read from the pydantic models themselves (so it cannot drift from what is validated)."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from fedloom.config import FedConfig
from fedloom.core.errors import ConfigError


@dataclass(frozen=True)
class Key:
    name: str
    type: str
    default: str
    doc: str


def _type(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(annotation))
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    return text or str(annotation).replace("typing.", "")


def _default(field: Any) -> str:
    if field.default_factory is not None:
        return repr(field.default_factory())
    if field.default is PydanticUndefined:
        return "(required)"
    return "null" if field.default is None else repr(field.default)


def _section(annotation: Any) -> type[BaseModel] | None:
    is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
    return annotation if is_model else None


def keys(model: type[BaseModel] = FedConfig, prefix: str = "") -> Iterator[Key]:
    """Every leaf key under ``model``, in declaration order."""
    for name, field in model.model_fields.items():
        section = _section(field.annotation)
        if section is not None:
            yield from keys(section, f"{prefix}{name}.")
            continue
        doc = " ".join((field.description or "").replace("``", "`").split())
        yield Key(f"{prefix}{name}", _type(field.annotation), _default(field), doc)


def sections() -> list[str]:
    return [n for n, f in FedConfig.model_fields.items() if _section(f.annotation)]


def section_keys(section: str | None) -> list[Key]:
    """The keys of ``section`` (all keys when None); an unknown section lists them."""
    if section is None:
        return list(keys())
    if section not in sections():
        raise ConfigError(
            [f"fedloom config: no section {section!r}; sections: {', '.join(sections())}"]
        )
    return [k for k in keys() if k.name.startswith(f"{section}.")]
