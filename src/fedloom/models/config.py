from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: str = "cnn"
    """A registered model name (see ``fedloom.models.available_models()``)."""
    checkpoint: str | None = None
    """Pretrained weights to start from (safetensors or a torch state_dict)."""
