"""Model registry: ``build_model(name, input_shape, num_classes)``; built-in models live in
``fedloom.models.zoo`` and are declared in ``fedloom.builtins``."""

from typing import TYPE_CHECKING

from fedloom.core.lazy import lazy_exports

if TYPE_CHECKING:
    from fedloom.models.config import ModelConfig as ModelConfig
    from fedloom.models.fit import check_model_fits as check_model_fits
    from fedloom.models.registry import available_models as available_models
    from fedloom.models.registry import build_model as build_model
    from fedloom.models.registry import models_for as models_for
    from fedloom.models.registry import register_model as register_model

_EXPORTS = {
    "ModelConfig": "fedloom.models.config",
    "check_model_fits": "fedloom.models.fit",
    "available_models": "fedloom.models.registry",
    "build_model": "fedloom.models.registry",
    "models_for": "fedloom.models.registry",
    "register_model": "fedloom.models.registry",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
