"""The fine-tuning section of a run config: which part of the model trains."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class FinetuneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["full"] = "full"
