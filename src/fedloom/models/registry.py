"""A name -> factory registry. A factory takes the input shape and number of classes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

from fedloom.core.errors import ConfigError

ModelFactory = Callable[[tuple[int, ...], int], nn.Module]
F = TypeVar("F", bound=ModelFactory)

_MODELS: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[F], F]:
    """Decorator: ``@register_model("cnn")`` on ``def cnn(input_shape, num_classes)``."""

    def add(factory: F) -> F:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = factory
        return factory

    return add


def available_models() -> list[str]:
    return sorted(_MODELS)


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    try:
        factory = _MODELS[name]
    except KeyError:
        raise ConfigError(
            [f"model.name: unknown model {name!r}; allowed: {', '.join(available_models())}"]
        ) from None
    return factory(tuple(input_shape), num_classes)
