"""Model zoo and registry: ``build_model(name, input_shape, num_classes)``."""

from fedloom.models import zoo as _zoo  # noqa: F401  (registers the built-in models)
from fedloom.models.config import ModelConfig
from fedloom.models.fit import check_model_fits
from fedloom.models.registry import available_models, build_model, models_for, register_model

__all__ = [
    "ModelConfig",
    "available_models",
    "build_model",
    "check_model_fits",
    "models_for",
    "register_model",
]
