"""Simulated device heterogeneity: speed, bandwidth, availability, deadlines."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class DevicesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: Literal["uniform"] = "uniform"
