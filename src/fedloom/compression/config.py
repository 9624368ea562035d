"""The compression section of a run config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class CompressionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    up: Literal["none"] = "none"
    down: Literal["none"] = "none"
