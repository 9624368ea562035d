"""The privacy section of a run config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class PrivacyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["none"] = "none"
