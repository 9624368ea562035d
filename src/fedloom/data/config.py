"""The data section of a run config: which dataset, and how it is divided among clients."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DatasetName = Literal[
    "digits", "mnist", "fashion_mnist", "kmnist", "synthetic", "cifar10", "custom"
]
#: ``custom`` records that the data came from the Python API (``fedloom.federate``):
#: fedloom has no loader for it, so such a run resumes only with the data passed again.
CUSTOM_DATA = "custom"
PartitionScheme = Literal["iid", "dirichlet", "shards", "quantity", "natural"]

#: Datasets read from IDX files, the only ones for which ``files`` means something.
IDX_DATASETS: frozenset[str] = frozenset({"mnist", "fashion_mnist", "kmnist"})
#: Datasets that come with their own per-client split.
NATURAL_DATASETS: frozenset[str] = frozenset({"synthetic"})


class DataConfig(BaseModel):
    """Frozen, validated data settings; see each field's description."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: DatasetName = "digits"
    dir: str | None = Field(
        None, description="folder holding the files for mnist/fashion_mnist/kmnist/cifar10"
    )
    files: Literal["train+test", "test"] = Field(
        "train+test",
        description='IDX datasets only: "test" reads just the t10k files and holds out '
        "test_fraction of them as the test split",
    )
    partition: PartitionScheme | None = Field(
        None, description='None means "natural" for synthetic and "iid" otherwise'
    )
    alpha: float = Field(0.5, gt=0, description="dirichlet concentration (smaller = more skew)")
    shards_per_client: int = Field(2, ge=1)
    quantity_sigma: float = Field(1.0, gt=0, description="lognormal sigma of client sizes")
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="held-out fraction where there is no official test split"
    )
    synthetic_alpha: float = Field(1.0, ge=0)
    synthetic_beta: float = Field(1.0, ge=0)
    min_client_size: int = Field(
        2, ge=0, description="dirichlet redraws until every client has at least this many"
    )
    classes: list[int] | None = Field(
        None,
        description="keep only these labels in train and test (e.g. [5, 6, 7, 8, 9] for a "
        "shifted fine-tuning task); labels keep their values, so the model's head is unchanged",
    )

    @model_validator(mode="after")
    def _check_combinations(self) -> DataConfig:
        problems: list[str] = []
        natural = self.name in NATURAL_DATASETS
        if natural and self.partition not in (None, "natural"):
            problems.append(
                f'partition: {self.name} has its own per-device split; use "natural" '
                f"(or leave it unset), not {self.partition!r}"
            )
        if not natural and self.partition == "natural":
            problems.append(
                f'partition: "natural" exists only for {sorted(NATURAL_DATASETS)}; '
                f"{self.name} needs iid, dirichlet, shards or quantity"
            )
        if self.files == "test" and self.name not in IDX_DATASETS:
            problems.append(
                f'files: "test" applies only to {sorted(IDX_DATASETS)}, not {self.name}'
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def resolved_partition(self) -> PartitionScheme:
        """The scheme actually used: ``partition``, or the dataset's default when unset."""
        if self.partition is not None:
            return self.partition
        return "natural" if self.name in NATURAL_DATASETS else "iid"
