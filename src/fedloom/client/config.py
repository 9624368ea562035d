"""``TrainConfig``: how a client trains locally. Torch-free, so configs load without torch."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedloom.core.registry import registered


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

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
    """Local SGD learning rate."""
    momentum: float = Field(0.9, ge=0, lt=1)
    """Local SGD momentum (reset every round)."""
    weight_decay: float = Field(0.0, ge=0)
    """Local SGD weight decay (L2)."""

    @field_validator("trainer")
    @classmethod
    def _known_trainer(cls, name: str) -> str:
        return registered("trainer", name)


class TaskConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: str = "classification"
    """What is learned: ``classification`` (test_accuracy), ``regression`` (test_mse,
    test_mae, test_r2), ``language_model`` (test_perplexity), or a registered task."""
    custom: list[str] = Field(default_factory=list)
    """Recorded, not set: the callables passed to ``fedloom.federate`` (loss, optimizer,
    train_step, metrics). They cannot be written here, so such a run resumes only from
    Python, with the same callables passed again."""

    @field_validator("name")
    @classmethod
    def _known_task(cls, name: str) -> str:
        return registered("task", name)


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    client_fraction: float = Field(0.0, ge=0.0, le=1.0)
    """Share of each round's sampled clients that evaluate the global model on their own
    held-out data before training (0: off)."""
    client_holdout: float = Field(0.2, gt=0.0, lt=1.0)
    """Share of each client's data held out for that; carved only when client evaluation
    is on, so it then trains on the rest."""
    personalize_steps: int = Field(0, ge=0)
    """Fine-tune a copy of the global model for this many local steps before evaluating
    (personalized evaluation); 0: evaluate the global model as it is."""


class ComputeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    device: str = Field("cpu", pattern=r"^(cpu|auto|mps|cuda(:[0-9]+)?)$")
    """Where clients train and the server evaluates: ``cpu`` (default, so results never
    change silently on a machine with a GPU), ``auto`` (CUDA, else MPS, else CPU),
    ``cuda``, ``cuda:N`` or ``mps``. Updates cross the wire as bytes and are aggregated on
    the CPU."""
    threads: int | None = Field(None, ge=1)
    """CPU intra-op threads (``torch.set_num_threads``); unset: torch's default."""


class ProgressConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    every_s: float = Field(0.0, ge=0)
    """Where no live bar can be drawn (not a terminal, the Python API), print a round's
    line at most this often (0: every round; the last round always)."""
