"""Simulated device heterogeneity: speed, bandwidth, availability, deadlines."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DeadlinePolicy = Literal["drop", "partial"]


class DevicesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    enabled: bool = False
    """Simulate per-client devices on a simulated clock (in-process simulation only)."""
    step_s: float = Field(0.05, gt=0)
    """Simulated seconds per local SGD step on a device of median speed."""
    speed_sigma: float = Field(0.5, ge=0)
    """Spread of compute speed: speed_k ~ LogNormal(0, speed_sigma), median 1."""
    bandwidth_mbps: float = Field(10.0, gt=0)
    """Median link speed (both directions), megabits per second."""
    bandwidth_sigma: float = Field(0.5, ge=0)
    """Spread of link speed: bandwidth_k = bandwidth_mbps · LogNormal(0, bandwidth_sigma)."""
    availability_min: float = Field(1.0, gt=0, le=1)
    """Client k is online in a round with probability a_k ~ Uniform(availability_min, 1)."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Probability that an online client drops out mid-round and never reports."""
    deadline_s: float | None = Field(None, gt=0)
    """Simulated seconds the server waits for a round; None waits for every client."""
    policy: DeadlinePolicy = "drop"
    """A client that cannot finish by the deadline: ``drop`` it from the round, or let it
    run only the local steps that fit (``partial``) and still report."""
