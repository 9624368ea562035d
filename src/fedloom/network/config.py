"""Settings of a networked (gRPC) federation."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class NetworkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["simulation"] = "simulation"
