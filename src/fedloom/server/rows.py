"""Many clients' updates as rows of stacked tensors, and adding them to an aggregator.

A vectorized group of simulated clients holds its trained weights stacked along a leading
client dimension. ``UpdateRows`` keeps them that way on the server's side, so that the
weighted sum of a group is one matrix product per tensor instead of one ``add`` per
client. An aggregator that can take rows says so by having ``add_rows``
(``RowAggregator``); any other one gets the rows one by one through its ``add``, so a
robust rule or a wrapper sees exactly the updates it would see one client at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from fedloom.core.errors import UpdateRejected
from fedloom.core.tensors import Tensors

if TYPE_CHECKING:
    from fedloom.server.strategy import Aggregator


@dataclass(frozen=True)
class UpdateRows:
    """Row i is client ``client_ids[i]``'s update (``updates[name][i]``) and reply meta."""

    client_ids: Sequence[str]
    updates: Tensors
    """Each tensor of shape ``(len(client_ids), *the update's shape)``."""
    metas: Sequence[Mapping[str, Any]]

    def __len__(self) -> int:
        return len(self.client_ids)

    def row(self, i: int) -> Tensors:
        """Client i's update (views of the stacked tensors)."""
        return {name: t[i] for name, t in self.updates.items()}

    def select(
        self, keep: Sequence[int], metas: Sequence[Mapping[str, Any]] | None = None
    ) -> UpdateRows:
        """The rows ``keep``, in that order (with ``metas`` instead of theirs, if given)."""
        if len(keep) == len(self) and list(keep) == list(range(len(self))):
            updates = self.updates
        else:
            index = torch.tensor(list(keep), dtype=torch.int64)
            updates = {name: t.index_select(0, index) for name, t in self.updates.items()}
        chosen = [self.metas[i] for i in keep] if metas is None else list(metas)
        return UpdateRows([self.client_ids[i] for i in keep], updates, chosen)


Refused = list[tuple[int, UpdateRejected]]
"""(row, why) of each row an aggregator rejected; the others were added."""


@runtime_checkable
class RowAggregator(Protocol):
    """An aggregator that adds a group of rows at once (``Aggregator.add`` for each row,
    in effect; rows it rejects are returned, as ``add`` would raise for them)."""

    def add_rows(self, rows: UpdateRows) -> Refused: ...


def add_rows(aggregator: Aggregator, rows: UpdateRows) -> Refused:
    """Add every row of ``rows`` to ``aggregator``: at once where it can take rows, else
    one ``add`` per row. Returns the rows it rejected (``UpdateRejected``)."""
    if isinstance(aggregator, RowAggregator) and _rows_match_add(aggregator):
        return aggregator.add_rows(rows)
    refused: Refused = []
    for i, cid in enumerate(rows.client_ids):
        try:
            aggregator.add(cid, rows.row(i), rows.metas[i])
        except UpdateRejected as why:
            refused.append((i, why))
    return refused


def _rows_match_add(aggregator: object) -> bool:
    """Whether ``add_rows`` was written with the ``add`` it stands for: a subclass that
    overrides ``add`` alone (a different weight, a clipping step) gets one ``add`` per row."""
    mro = type(aggregator).__mro__
    rows_owner = next(k for k in mro if "add_rows" in vars(k))
    add_owner = next((k for k in mro if "add" in vars(k)), None)
    return rows_owner is add_owner
