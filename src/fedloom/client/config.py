"""``TrainConfig``: how a client trains locally. Torch-free, so configs load without torch."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedloom.core.registry import registered


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    trainer: str = "sgd"
    """The registered local trainer (``sgd``: minibatch SGD on cross-entropy, or a
    plugin's ``factory(config) -> LocalTrainer``)."""
    local_epochs: int = Field(1, ge=1)
    """Passes over the local data per round (ignored when ``local_steps`` is set)."""
    local_steps: int | None = Field(None, ge=1)
    """A fixed number of SGD steps per round instead of epochs."""
    batch_size: int | None = Field(10, ge=1)
    """Minibatch size; ``null`` trains on the full local set each step."""
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)

    @field_validator("trainer")
    @classmethod
    def _known_trainer(cls, name: str) -> str:
        return registered("trainer", name)
