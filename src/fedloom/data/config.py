"""The data section of a run config: which dataset, and how it is divided among clients."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fedloom.core.registry import REGISTRY, registered

#: ``custom`` records that the data came from the Python API (``fedloom.federate``):
#: fedloom has no loader for it, so such a run resumes only with the data passed again.
CUSTOM_DATA = "custom"
NATURAL = "natural"
"""The partition of a dataset that comes with its own per-device split."""


def _has(name: str, capability: str) -> bool:
    """Whether dataset ``name`` declares ``capability``: ``files`` (read from IDX files,
    so ``data.files`` applies) or ``natural`` (it has its own per-device split)."""
    if name == CUSTOM_DATA:
        return False
    return capability in REGISTRY.component("dataset", name, "data.name").capabilities


class DataConfig(BaseModel):
    """Frozen, validated data settings; see each field's description."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: str = "digits"
    """A registered dataset (digits, mnist, fashion_mnist, kmnist, synthetic, cifar10, or
    a plugin's), or ``custom`` (data passed to the Python API)."""
    dir: str | None = Field(
        None, description="folder holding the files for mnist/fashion_mnist/kmnist/cifar10"
    )
    files: Literal["train+test", "test"] = Field(
        "train+test",
        description='IDX datasets only: "test" reads just the t10k files and holds out '
        "test_fraction of them as the test split",
    )
    partition: str | None = Field(
        None,
        description="a registered partitioner (iid, dirichlet, shards, quantity, or a "
        'plugin\'s) or "natural"; None means "natural" for a dataset with its own split '
        'and "iid" otherwise',
    )
    alpha: float = Field(0.5, gt=0, description="dirichlet concentration (smaller = more skew)")
    shards_per_client: int = Field(2, ge=1)
    """``shards``: label-sorted shards per client (McMahan et al. 2017)."""
    quantity_sigma: float = Field(1.0, gt=0, description="lognormal sigma of client sizes")
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="held-out fraction where there is no official test split"
    )
    synthetic_alpha: float = Field(1.0, ge=0)
    """``synthetic``: α of Synthetic(α, β) (Li et al. 2020): how much the models differ."""
    synthetic_beta: float = Field(1.0, ge=0)
    """``synthetic``: β of Synthetic(α, β): how much the clients' inputs differ."""
    synthetic_samples: int | None = Field(None, ge=2)
    """``synthetic``/``synthetic_lazy``: every device's sample count (None: Li et al.'s
    lognormal sizes, 50 to 1000)."""
    min_client_size: int = Field(
        2, ge=0, description="dirichlet redraws until every client has at least this many"
    )
    classes: list[int] | None = Field(
        None,
        description="keep only these labels in train and test (e.g. [5, 6, 7, 8, 9] for a "
        "shifted fine-tuning task); labels keep their values, so the model's head is unchanged",
    )
    workers: int = Field(0, ge=0)
    """``DataLoader`` worker processes reading a lazily read dataset (a ``Dataset`` passed
    to ``fedloom.federate`` that is not a ``TensorDataset``); 0 reads in the training
    process. Workers pay off when reading an item is slow (decoding files)."""
    pin_memory: bool = False
    """Page-locked batches of a lazily read dataset, for faster copies to a CUDA device."""
    target_key: str = Field("labels", min_length=1)
    """In a dataset whose items are dicts (Hugging Face style), the entry holding the
    target; the other entries are the model's keyword arguments."""

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        return name if name == CUSTOM_DATA else registered("dataset", name)

    @field_validator("partition")
    @classmethod
    def _known_partitioner(cls, name: str | None) -> str | None:
        return name if name in (None, NATURAL) else registered("partitioner", name)

    @model_validator(mode="after")
    def _check_combinations(self) -> DataConfig:
        problems: list[str] = []
        natural = _has(self.name, "natural")
        if natural and self.partition not in (None, "natural"):
            problems.append(
                f'partition: {self.name} has its own per-device split; use "natural" '
                f"(or leave it unset), not {self.partition!r}"
            )
        if not natural and self.partition == "natural":
            problems.append(
                f'partition: "natural" exists only for datasets with their own split; '
                f"{self.name} needs one of {', '.join(REGISTRY.names('partitioner'))}"
            )
        if self.files == "test" and not _has(self.name, "files"):
            problems.append(f'files: "test" applies only to IDX datasets, not {self.name}')
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def resolved_partition(self) -> str:
        """The scheme actually used: ``partition``, or the dataset's default when unset."""
        if self.partition is not None:
            return self.partition
        return NATURAL if _has(self.name, "natural") else "iid"
