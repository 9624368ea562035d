"""Simulated hostile clients."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class AttackConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["none"] = "none"
