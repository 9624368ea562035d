"""How the in-process simulation executes a round's clients: one by one, vectorized with
torch.func, or sharded over torch.distributed ranks."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Vectorize = Literal["auto", "on", "off"]


class SimulationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    vectorize: Vectorize = "off"
    """Train a round's clients together with torch.func: ``auto`` where eligible and faster,
    ``on`` refuses an ineligible model naming the module, ``off`` one client at a time."""
    workers: int = Field(1, ge=1)
    """Processes (torch.distributed ranks) that share each round's clients, started by
    ``fedloom run``/``resume`` (from Python: ``fedloom.simulation.distributed.spawn``);
    ignored when launched by torchrun (WORLD_SIZE set)."""
    timeout_s: float = Field(1800.0, gt=0)
    """Seconds a rank waits in a collective (a round's all-reduce) before it gives up on
    the others; a rank that dies is noticed at once, this bounds one that hangs."""

    @field_validator("vectorize", mode="before")
    @classmethod
    def _yaml_switch(cls, value: object) -> object:
        """YAML reads a bare ``on``/``off`` as a boolean: take it as the word."""
        if isinstance(value, bool):
            return "on" if value else "off"
        return value
