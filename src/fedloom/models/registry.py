"""A name -> factory registry. A factory takes the input shape and number of classes.

A model may declare how many dimensions one input must have (``input_ndim=3`` for a
convolutional net on ``(C, H, W)`` images), so that a model and a dataset that do not
fit are reported as a configuration error naming both, before anything is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

from fedloom.core.errors import ConfigError

ModelFactory = Callable[[tuple[int, ...], int], nn.Module]
F = TypeVar("F", bound=ModelFactory)

_MODELS: dict[str, ModelFactory] = {}
_INPUT_NDIM: dict[str, int] = {}
"""Models that need inputs of one rank; the others (flattening models) take any shape."""


def register_model(name: str, *, input_ndim: int | None = None) -> Callable[[F], F]:
    """Decorator: ``@register_model("cnn", input_ndim=3)`` on ``def cnn(input_shape, classes)``."""

    def add(factory: F) -> F:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = factory
        if input_ndim is not None:
            _INPUT_NDIM[name] = input_ndim
        return factory

    return add


def available_models() -> list[str]:
    return sorted(_MODELS)


def models_for(input_shape: tuple[int, ...]) -> list[str]:
    """The registered models that accept inputs of ``input_shape``'s rank."""
    return [
        n for n in available_models() if _INPUT_NDIM.get(n, len(input_shape)) == len(input_shape)
    ]


def _expected(ndim: int) -> str:
    if ndim == 3:
        return "images of shape (C, H, W)"
    return f"inputs with {ndim} dimension(s)"


def _hint(input_shape: tuple[int, ...]) -> str:
    fitting = models_for(input_shape)
    return f"; use model.name={' or '.join(fitting)}" if fitting else ""


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, *, data_name: str = "the data"
) -> nn.Module:
    """Build model ``name`` for ``input_shape`` and ``num_classes``.

    A model that cannot take ``input_shape`` (wrong rank, or too small an image for its
    layers) is a ``ConfigError`` naming the model, ``data_name`` and the shapes.
    """
    try:
        factory = _MODELS[name]
    except KeyError:
        raise ConfigError(
            [f"model.name: unknown model {name!r}; allowed: {', '.join(available_models())}"]
        ) from None
    shape = tuple(input_shape)
    ndim = _INPUT_NDIM.get(name)
    if ndim is not None and len(shape) != ndim:
        raise ConfigError(
            [
                f"model {name} expects {_expected(ndim)} but data {data_name} gives "
                f"{shape}{_hint(shape)}"
            ]
        )
    try:
        return factory(shape, num_classes)
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            [
                f"model {name} cannot take inputs of shape {shape} from data {data_name} "
                f"({reason}){_hint(shape) if ndim is None else ''}"
            ]
        ) from None
