"""The fine-tuning section of a run config: which part of the model trains."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FinetuneMode = Literal["full", "names", "last_k", "importance", "lora"]
ImportanceSource = Literal["clients", "weights"]


class FinetuneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    mode: FinetuneMode = "full"
    """``full`` trains everything; the other modes freeze all but a selection."""
    names: list[str] = Field(default_factory=list)
    """``names`` mode: glob patterns over parameter names, e.g. ``["fc2.*"]``. In ``lora``
    mode, the layers these match train fully instead of getting adapters (a new head)."""
    last_k: int = Field(1, ge=1)
    """``last_k`` mode: how many of the last parameterised layers train."""
    fraction: float = Field(0.1, gt=0.0, le=1.0)
    """``importance`` mode: share of the parameters to train, chosen by gradient magnitude."""
    importance_samples: int = Field(256, ge=1)
    """``importance`` mode: local examples per client used to score the tensors."""
    importance_source: ImportanceSource = "clients"
    """``importance`` mode: score tensors by mean |gradient| on the clients' data
    (``clients``: an unnoised pass, refused with differential privacy) or by the mean
    |weight| of the pretrained model (``weights``: no data is read)."""
    lora_rank: int = Field(4, ge=1)
    """``lora`` mode: rank r of the adapters on every Linear and Conv2d layer."""
    lora_alpha: float = Field(4.0, gt=0.0)
    """``lora`` mode: the adapter output is scaled by alpha / r."""
    lora_merge: bool = True
    """``lora`` mode: the run's result (``RunResult.model``, ``model.safetensors``) is the
    model with the adapters merged into its layers (the original architecture); false
    keeps them as adapters (their tensors are saved as they are)."""
