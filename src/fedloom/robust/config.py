"""Simulated hostile clients."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedloom.core.registry import registered


class AttackConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    kind: str = "none"
    """What attacking clients do: send ``-u`` (sign_flip), ``scale·u`` (scale, model
    replacement), pure noise N(0, noise_std²) (gaussian), or train on flipped labels
    ``y -> C-1-y`` (label_flip)."""
    fraction: float = Field(0.2, ge=0, le=1)
    """Fraction of clients that attack, chosen once from the run seed."""
    scale: float = Field(10.0, gt=0)
    """``scale``: the factor on the attacker's honest update."""
    noise_std: float = Field(1.0, gt=0)
    """``gaussian``: standard deviation of each coordinate of the fake update."""

    @field_validator("kind")
    @classmethod
    def _known_attack(cls, kind: str) -> str:
        return kind if kind == "none" else registered("attack", kind)
