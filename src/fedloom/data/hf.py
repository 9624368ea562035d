"""Hugging Face ``datasets`` (and flwr-datasets partitions) as fedloom client data.

Optional extra: ``pip install 'fedloom[hf]'``. Nothing here imports ``datasets``: it takes
the user's ``datasets.Dataset`` objects and reads them through their own methods, so
fedloom works without the package.

- ``HFItems(table, target=..., inputs=...)``: a torch ``Dataset`` of ``(inputs, target)``
  items read row by row (``with_format("torch")``): one input column gives a tensor,
  several give a dict (the model is called as ``model(**inputs)``). Its ``.targets`` (the
  target column, read as a column: no row is decoded) lets label-based partitions and
  label counts work without reading the inputs.
- ``client_data_from_hf(table, partition_by="hospital", ...)``: the natural split, one
  client per value of a column, for ``fedloom.federate(client_data=...)``.
- ``client_data_from_partitioner(partitioner, ...)``: the partitions of a flwr-datasets
  partitioner (anything with ``num_partitions`` and ``load_partition(k)``), or of a
  ``FederatedDataset`` through ``load_partition``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from fedloom.core.errors import DataError


def is_hf_dataset(obj: object) -> bool:
    """Whether ``obj`` is a Hugging Face ``datasets.Dataset`` (without importing it)."""
    kind = type(obj)
    return kind.__module__.startswith("datasets.") and kind.__name__ == "Dataset"


class HFItems(Dataset[tuple[Any, Tensor]]):
    """A ``datasets.Dataset`` as ``(inputs, target)`` items, read row by row."""

    def __init__(
        self, table: Any, *, target: str = "label", inputs: str | Sequence[str] | None = None
    ) -> None:
        if not is_hf_dataset(table):
            raise DataError(f"expected a Hugging Face datasets.Dataset, got {type(table).__name__}")
        columns = list(table.column_names)
        if target not in columns:
            raise DataError(f"the dataset has columns {columns}, no target column {target!r}")
        if inputs is None:
            names = [c for c in columns if c != target]
        else:
            names = [inputs] if isinstance(inputs, str) else list(inputs)
        missing = sorted(set(names) - set(columns))
        if missing or not names or target in names:
            raise DataError(
                f"input columns {names} must be columns of {columns} other than the "
                f"target {target!r}"
            )
        self.single = isinstance(inputs, str) or len(names) == 1
        self.names, self.target = names, target
        self.table = table.with_format("torch", columns=[*names, target])
        self.targets = _column_targets(self.table, target)
        """The target column as one tensor (class labels or numbers), if it is scalar."""

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def __getitem__(self, i: int) -> tuple[Any, Tensor]:
        row = self.table[int(i)]
        x = row[self.names[0]] if self.single else {name: row[name] for name in self.names}
        return x, row[self.target]


def _column_targets(table: Any, target: str) -> Tensor | None:
    column = table[target][:]  # one columnar read, no row decoded
    if isinstance(column, Tensor) and column.ndim == 1 and column.dtype != torch.bool:
        return column.float() if column.dtype.is_floating_point else column.long()
    return None  # sequences (next tokens), strings: unknown to the partitioners


def client_data_from_hf(
    table: Any,
    partition_by: str,
    *,
    target: str = "label",
    inputs: str | Sequence[str] | None = None,
) -> dict[str, HFItems]:
    """One client per distinct value of column ``partition_by`` (a natural split), named
    by the value, in sorted order; ``inputs`` defaults to every other column but the
    target."""
    if not is_hf_dataset(table):
        raise DataError(f"expected a Hugging Face datasets.Dataset, got {type(table).__name__}")
    if partition_by not in table.column_names:
        raise DataError(
            f"the dataset has columns {table.column_names}, no column {partition_by!r} "
            "to partition by"
        )
    if partition_by == target:
        raise DataError(f"partition_by={partition_by!r} is the target column")
    values = np.asarray(table.with_format(None)[partition_by][:])
    if values.dtype.kind not in "biuUO":
        raise DataError(f"column {partition_by!r} holds {values.dtype} values, not ids")
    if inputs is None:
        inputs = [c for c in table.column_names if c not in (target, partition_by)]
    clients = {}
    for value in sorted(set(values.tolist()), key=str):
        rows = np.flatnonzero(values == value).tolist()
        clients[str(value)] = HFItems(table.select(rows), target=target, inputs=inputs)
    return clients


def client_data_from_partitioner(
    partitioner: Any,
    *,
    target: str = "label",
    inputs: str | Sequence[str] | None = None,
    num_partitions: int | None = None,
) -> dict[str, HFItems]:
    """Client k = partition k of a flwr-datasets partitioner (its ``dataset`` set; any
    object with ``load_partition(k)`` and ``num_partitions``), or of a flwr-datasets
    ``FederatedDataset`` with ``num_partitions`` given."""
    load: Callable[[int], Any] | None = getattr(partitioner, "load_partition", None)
    count = (
        num_partitions
        if num_partitions is not None
        else getattr(partitioner, "num_partitions", None)
    )
    if load is None or not isinstance(count, int) or count < 1:
        raise DataError(
            f"{type(partitioner).__name__} is not a partitioner: it needs load_partition(k) "
            "and a positive num_partitions (or pass num_partitions=)"
        )
    return {str(k): HFItems(load(k), target=target, inputs=inputs) for k in range(count)}
