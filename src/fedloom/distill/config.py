"""The ``clients.models`` entries and the ``distill`` section (a leaf module: no torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fedloom.core.registry import registered

SPLITS = ("train", "test")
"""The splits ``distill.data=NAME:SPLIT`` may name."""


class ModelShare(BaseModel):
    """One architecture of a heterogeneous federation and the clients that train it."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    model: str
    """A registered model (cnn, mlp_2nn, logreg, ...)."""
    fraction: float | None = Field(None, gt=0, le=1)
    """Share of the clients (those no ``clients`` list names) given this model, drawn
    with the run's seed."""
    clients: list[int] | None = None
    """Client ids given this model; the other form of an entry."""

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        return registered("model", name)

    @model_validator(mode="after")
    def _one_form(self) -> ModelShare:
        if (self.fraction is None) == (self.clients is None):
            raise ValueError(
                f"clients.models entry for {self.model} needs exactly one of fraction and clients"
            )
        if self.clients is not None and not self.clients:
            raise ValueError(f"clients.models entry for {self.model}: clients is empty")
        return self


def check_shares(shares: list[ModelShare], num: int) -> None:
    """ValueError unless ``shares`` give every one of ``num`` clients exactly one model."""
    listed = [cid for s in shares for cid in s.clients or []]
    outside = sorted({cid for cid in listed if not 0 <= cid < num})
    if outside:
        raise ValueError(f"clients.models names clients {outside[:5]} outside 0..{num - 1}")
    twice = sorted({cid for cid in listed if listed.count(cid) > 1})
    if twice:
        raise ValueError(f"clients.models gives clients {twice[:5]} more than one model")
    fractions = [s.fraction for s in shares if s.fraction is not None]
    if fractions and abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"clients.models fractions must sum to 1, got {sum(fractions):g}")
    if not fractions and len(set(listed)) != num:
        missing = sorted(set(range(num)) - set(listed))
        raise ValueError(f"clients.models gives no model to clients {missing[:5]}")
    models = [s.model for s in shares]
    if len(set(models)) != len(models):
        raise ValueError("clients.models lists a model twice; give each model one entry")


class DistillConfig(BaseModel):
    """Ensemble distillation (``strategy.name=feddf``) and FedMD's public set."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    data: str | None = None
    """Unlabeled distillation data: a registered dataset (``NAME``, its train split) or a
    split of one (``NAME:train``, ``NAME:test``); None holds out ``holdout`` of the
    training data, unlabeled, before it is divided among the clients."""
    holdout: float = Field(0.1, gt=0, lt=1)
    """Share of the training data held out as distillation data when ``data`` is None."""
    max_examples: int | None = Field(None, ge=2)
    """Use at most this many distillation examples (a seeded draw); None: all."""
    steps: int = Field(100, ge=0)
    """Most optimizer steps of one distillation (FedDF: per architecture and round;
    FedMD: each client's digest step); 0: no distillation (FedDF is then FedAvg within
    each architecture, on the same clients' data)."""
    optimizer: Literal["adam", "sgd"] = "adam"
    """The distillation's optimizer: Adam, or plain SGD (no momentum)."""
    lr: float | None = Field(None, gt=0)
    """Learning rate while distilling (FedDF with Adam: unless ``step_scale`` is set);
    None: 1e-3 with Adam, 0.01 with SGD."""
    step_scale: float | None = Field(None, gt=0)
    """FedDF with Adam: each tensor's learning rate is this times the root mean square
    of the round's averaged update of that tensor, so that the distillation's steps are
    as large as the clients' were (needed with the plain ``mean`` teacher, unsharpened:
    0.3); null: ``lr``. SGD and FedMD's digest use ``lr``."""
    teacher: Literal["centered", "mean"] = "centered"
    """The teacher's class scores. ``mean``: the mean of the client models' scores on
    each distillation input (FedDF's ensemble, FedMD's consensus). ``centered``: that
    mean minus its own mean over the distillation inputs, class by class, so that a
    class every specialist favours everywhere (the label prior of a client that holds
    one or two classes) no longer outvotes the inputs' evidence."""
    teacher_std: float | None = Field(1.0, gt=0)
    """The teacher's class scores are scaled up, never down, to at least this standard
    deviation over the distillation inputs and classes: a nearly uniform teacher (the
    mean of models that barely trained, or that disagree) is sharpened, so the student
    learns which class the ensemble prefers rather than its indecision; null: as they
    are."""
    guard: Literal["classes", "none"] = "classes"
    """FedDF: ``classes`` keeps an architecture's averaged model, undistilled, in a
    round whose teacher predicts fewer distinct classes on the distillation inputs
    than that average does (a teacher that lost distinctions, typically one class for
    every input when the clients hold one or two classes each: a risk of
    ``teacher=mean``); ``none`` always distils."""
    batch_size: int = Field(64, ge=1)
    """Distillation examples per step."""
    temperature: float = Field(1.0, gt=0)
    """Softmax temperature of the teacher's and the student's logits."""
    val_fraction: float = Field(0.2, gt=0, lt=1)
    """Share of the distillation data held out to measure how well the student matches
    the ensemble (early stopping; no labels)."""
    check_every: int | None = Field(None, ge=1)
    """Score the student on the held-out part every this many steps; None: once per
    pass over the distillation inputs (an epoch) for FedDF, every 10 steps for FedMD's
    digest."""
    patience: int = Field(3, ge=1)
    """Stop after this many checks without a better student (FedDF: a lower held-out
    distillation loss at no lower agreement than the start; FedMD: a higher agreement,
    the loss breaking ties); the best student, the start included, is kept."""

    @field_validator("data")
    @classmethod
    def _known_data(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name, _, split = value.partition(":")
        registered("dataset", name)
        if split and split not in SPLITS:
            raise ValueError(
                f"distill.data split must be one of {', '.join(SPLITS)}, got {split!r}"
            )
        return value
