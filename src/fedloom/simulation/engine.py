"""How the in-process simulation executes a round's clients: one by one, vectorized with
torch.func, or sharded over torch.distributed ranks."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _yaml_word(value: object) -> object:
    """YAML reads a bare ``on``/``off`` as a boolean: take it as the word."""
    return ("on" if value else "off") if isinstance(value, bool) else value


Switch = Annotated[Literal["auto", "on", "off"], BeforeValidator(_yaml_word)]
"""``auto|on|off``, where YAML's bare ``on``/``off`` (booleans) count as the words."""


class SimulationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    vectorize: Switch = "off"
    """Train a round's clients together with torch.func: ``auto`` where eligible and faster,
    ``on`` refuses an ineligible model naming the module, ``off`` one client at a time."""
    workers: int = Field(1, ge=1)
    """Processes (torch.distributed ranks) that share each round's clients, started by
    ``fedloom run``/``resume`` (from Python: ``fedloom.simulation.distributed.spawn``);
    ignored when launched by torchrun (WORLD_SIZE set)."""
    timeout_s: float = Field(1800.0, gt=0)
    """Seconds a rank waits in a collective (a round's all-reduce) before it gives up on
    the others; a rank that dies is noticed at once, this bounds one that hangs."""
