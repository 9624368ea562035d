"""A group of simulated clients' replies in one object, checked row by row as tensors.

A vectorized group (``fedloom.simulation.group``) trains its clients with their weights
stacked. Sending each client's update through the uplink codec, framing it, decoding it
and adding it to the aggregate one by one costs more than the training of a small model.
With the lossless codec (``compression.up=none``: the payload *is* the tensors), the
group instead hands the server one ``GroupReply``: the stacked updates and each client's
reply meta. The server checks it as ``check_reply`` checks one reply, every row on its own:

- each row's meta (``num_examples``, ``train_loss``), frame size (the exact size of the
  frame the client would have sent) and the strategy's meta checks;
- names, shapes and dtypes (for the group at once: its rows share them);
- each row finite and within ``±MAX_ABS_VALUE``, by one ``aminmax`` per tensor over rows;

and a bad row is that client's rejection, with the per-client path's message, while the
other rows go on. The accepted rows are added in one weighted sum
(``fedloom.server.rows``), equal to the per-client path's within float64 rounding.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from fedloom.core.errors import NON_FINITE, FedloomError, NonFinite, UpdateRejected
from fedloom.core.framing import dump_header
from fedloom.core.message import Message
from fedloom.core.tensors import Tensors
from fedloom.server.rows import UpdateRows, add_rows
from fedloom.server.validate import MAX_ABS_VALUE, ReplyMeta, UpdateSpec, check_meta
from fedloom.transport.base import Reply, Transport
from fedloom.transport.wire import frame_size

if TYPE_CHECKING:
    from fedloom.server.server import RoundTally, Server
    from fedloom.server.strategy import Aggregator

LOSSLESS = "none"
"""The only uplink codec a group reply stands in for: its payload is the tensors as they are."""


@dataclass(frozen=True)
class GroupReply:
    """Rows of ``fit_result`` replies of one round: client ``client_ids[i]`` sent update
    ``updates[name][i]`` with ``metas[i]``, encoded by ``codec`` in ``payload_bytes``."""

    round: int
    client_ids: Sequence[str]
    updates: Tensors
    metas: Sequence[dict[str, Any]]
    codec: str
    payload_bytes: int
    """The size of one row's payload (the same for every row of a lossless encoding)."""

    def __post_init__(self) -> None:
        if len(self.metas) != len(self.client_ids):
            raise ValueError(
                f"a group reply needs one meta per client: {len(self.metas)} metas for "
                f"{len(self.client_ids)} clients"
            )

    def update(self, i: int) -> Tensors:
        """Row ``i``'s update, by name."""
        return {name: t[i] for name, t in self.updates.items()}

    def frame_size(self, i: int) -> int:
        """The exact size of the frame client i would have sent: ``frame_size`` of its
        message, whose JSON header differs between rows only in the sender and the meta."""
        meta = dump_header(self.metas[i], sort_keys=True)
        sender = dump_header(self.client_ids[i])
        return self._frame_bytes + len(meta) + len(sender)

    @cached_property
    def _frame_bytes(self) -> int:
        """The size of a frame whose sender and meta serialize to nothing, and its payload."""
        empty = Message("fit_result", self.round, "", b"", {})
        return frame_size(empty) - len(dump_header({})) - len(dump_header("")) + self.payload_bytes


def row_problems(
    updates: Mapping[str, torch.Tensor], spec: UpdateSpec, rows: int
) -> dict[int, UpdateRejected]:
    """The first problem of each of the ``rows`` rows that has one, as ``check_reply``
    would name it for that row's update."""
    missing, extra = (
        sorted(set(spec.shapes) - set(updates)),
        sorted(set(updates) - set(spec.shapes)),
    )
    if missing or extra:
        why = UpdateRejected(f"tensor names differ: missing {missing[:5]}, unexpected {extra[:5]}")
        return dict.fromkeys(range(rows), why)
    found: dict[int, UpdateRejected] = {}
    for name, t in updates.items():
        if t.dim() == 0 or len(t) != rows:
            why = UpdateRejected(f"{name}: {len(t) if t.dim() else 0} rows for {rows} clients")
            return dict.fromkeys(range(rows), why)
        shape = tuple(t.shape[1:])
        if shape != spec.shapes[name]:
            why = UpdateRejected(f"{name}: shape {shape} != {spec.shapes[name]}")
            return {i: found.get(i, why) for i in range(rows)}
        if t.dtype != spec.dtypes[name]:
            why = UpdateRejected(f"{name}: dtype {t.dtype} != {spec.dtypes[name]}")
            return {i: found.get(i, why) for i in range(rows)}
        if not t[0].numel():
            continue
        low, high = torch.aminmax(t.reshape(rows, -1), dim=1)
        non_finite = ~(torch.isfinite(low) & torch.isfinite(high))
        beyond = ~non_finite & (torch.maximum(-low, high) > MAX_ABS_VALUE)
        if bool(non_finite.any()):
            for i in non_finite.nonzero().flatten().tolist():
                found.setdefault(i, NonFinite(f"{name}: contains {NON_FINITE}"))
        if bool(beyond.any()):
            for i in beyond.nonzero().flatten().tolist():
                found.setdefault(i, UpdateRejected(f"{name}: values beyond ±{MAX_ABS_VALUE:g}"))
    return found


def _check_row(group: GroupReply, i: int, rnd: int, spec: UpdateSpec, size: int) -> ReplyMeta:
    """``check_reply``'s checks of one row that are not about the tensors' values."""
    if group.round != rnd:
        raise UpdateRejected(f"update is for round {group.round}, the server is in round {rnd}")
    if size > spec.max_bytes:
        raise UpdateRejected(f"update of {size} bytes exceeds the limit of {spec.max_bytes}")
    return check_meta(group.metas[i])


def collect_group(
    server: Server, rnd: int, group: GroupReply, aggregator: Aggregator, tally: RoundTally
) -> None:
    """Count, check and aggregate every row of ``group``, as the round loop does for one
    reply each: a bad row is its client's rejection; the good rows are added at once."""
    if group.codec != LOSSLESS or server.up.name != LOSSLESS:
        raise FedloomError(
            f"a group reply stands in for compression.up={LOSSLESS} only (the group used "
            f"{group.codec!r}, the server {server.up.name!r})"
        )
    views = [server.strategy.client_view(cid) for cid in group.client_ids]
    specs = {view: server._spec(view) for view in set(views)}
    count = len(group.client_ids)
    problems = {view: row_problems(group.updates, spec, count) for view, spec in specs.items()}
    accepted: list[int] = []
    checked: list[ReplyMeta] = []
    for i, (cid, view) in enumerate(zip(group.client_ids, views, strict=True)):
        size = group.frame_size(i)
        tally.bytes_up += size
        try:
            meta = _check_row(group, i, rnd, specs[view], size)
            if i in problems[view]:
                raise problems[view][i]
            server.strategy.check_meta(cid, group.metas[i])
        except UpdateRejected as why:
            tally.non_finite += isinstance(why, NonFinite)
            server._reject(rnd, cid, str(why), tally)
            continue
        accepted.append(i)
        checked.append(meta)
    rows = UpdateRows(group.client_ids, group.updates, group.metas).select(accepted)
    refused = dict(add_rows(aggregator, rows))
    for j, (i, meta) in enumerate(zip(accepted, checked, strict=True)):
        cid = group.client_ids[i]
        if j in refused:
            server._reject(rnd, cid, str(refused[j]), tally)
            continue
        server.accepted(rnd, cid, group.metas[i], meta, partial(group.update, i), tally)


@runtime_checkable
class GroupingTransport(Protocol):
    """A transport that can answer with group replies besides single ones."""

    def exchange_grouped(self, messages: Mapping[str, Message]) -> Iterator[Reply | GroupReply]:
        """``exchange``, where some clients' replies come as one ``GroupReply``."""
        ...


def replies_of(
    transport: Transport, messages: Mapping[str, Message]
) -> Iterator[Reply | GroupReply]:
    """The replies to ``messages``: group replies where the transport gives them."""
    if isinstance(transport, GroupingTransport):
        return transport.exchange_grouped(messages)
    return iter(transport.exchange(messages))
