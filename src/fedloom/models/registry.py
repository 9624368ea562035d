"""Models by name (kind ``model`` of ``fedloom.core.registry``): a factory takes the input
shape and the number of classes.

A model may declare how many dimensions one input must have (``input_ndim=3`` for a
convolutional net on ``(C, H, W)`` images), so that a model and a dataset that do not
fit are reported as a configuration error naming both, before anything is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

from fedloom.core.errors import ConfigError
from fedloom.core.registry import REGISTRY

ModelFactory = Callable[[tuple[int, ...], int], nn.Module]
F = TypeVar("F", bound=ModelFactory)


def register_model(name: str, *, input_ndim: int | None = None) -> Callable[[F], F]:
    """Decorator: ``@register_model("cnn", input_ndim=3)`` on ``def cnn(input_shape, classes)``;
    the same as ``@fedloom.register("model", name, input_ndim=...)``."""
    if input_ndim is None:
        return REGISTRY.register("model", name)
    return REGISTRY.register("model", name, input_ndim=input_ndim)


def available_models() -> list[str]:
    return REGISTRY.names("model")


def _input_ndim(name: str) -> int | None:
    """The rank one input of model ``name`` must have; None: it flattens any shape."""
    ndim = REGISTRY.component("model", name, "model.name").meta.get("input_ndim")
    return None if ndim is None else int(ndim)


def models_for(input_shape: tuple[int, ...]) -> list[str]:
    """The registered models that accept inputs of ``input_shape``'s rank."""
    return [
        n for n in available_models() if (_input_ndim(n) or len(input_shape)) == len(input_shape)
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
    factory = REGISTRY.component("model", name, "model.name").load()
    shape = tuple(input_shape)
    ndim = _input_ndim(name)
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
