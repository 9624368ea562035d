"""A vectorized group's trained clients as one ``GroupReply`` (``fedloom.server.group_reply``).

``Client.finish`` for a whole group at once, where the result is the same: clients with no
update hooks (no clipping, local noise, control variates, attacks) and the lossless,
stateless uplink codec, whose encoding the server would only decode again. The updates
(trained minus global weights) stay stacked; each row is checked finite as
``Client.finish`` checks one update, and a row that is not fails that client alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fedloom.client.client import Client, diverged, loss_ok
from fedloom.client.context import FitContext
from fedloom.core.codec import StatefulCodec
from fedloom.core.tensors import Tensors
from fedloom.server.group_reply import LOSSLESS, GroupReply
from fedloom.simulation.vectorized import GroupResult
from fedloom.transport.base import Reply
from fedloom.transport.inprocess import client_failed


def can_reply_as_group(clients: Sequence[Client]) -> bool:
    """Whether ``Client.finish`` of these clients is only ``local − global`` and a
    lossless encoding (see the module docstring)."""
    if any(c.hooks for c in clients):
        return False
    codecs = {id(c.up): c.up for c in clients}.values()  # usually one, shared by all
    return all(up.name == LOSSLESS and not isinstance(up, StatefulCodec) for up in codecs)


def stacked_update(global_state: Tensors, trained: GroupResult) -> Tensors:
    """Row k: client k's trained weights minus the global ones (an untrained tensor: 0),
    on the CPU, as ``Client.finish`` computes each one."""
    out: Tensors = {}
    rows = len(trained.losses)
    for name, start in global_state.items():
        if name in trained.params:
            out[name] = trained.params[name].cpu() - start
        else:
            out[name] = torch.zeros(rows, *start.shape, dtype=start.dtype)
    return out


def finite_rows(updates: Tensors, losses: Sequence[float]) -> list[bool]:
    """Row k is finite and its loss reportable (``Client.finish``'s check)."""
    ok = torch.ones(len(losses), dtype=torch.bool)
    for t in updates.values():
        if t[0].numel():
            ok &= torch.isfinite(t.reshape(len(losses), -1)).all(dim=1)
    return [bool(good) and loss_ok(loss) for good, loss in zip(ok.tolist(), losses, strict=True)]


def group_reply(
    rnd: int,
    clients: Sequence[Client],
    contexts: Sequence[FitContext],
    trained: GroupResult,
) -> tuple[list[Reply], GroupReply | None]:
    """The failures (clients whose update or loss is non-finite) and one reply of the
    other clients' rows (None when every client failed)."""
    global_state = contexts[0].global_state
    updates = stacked_update(global_state, trained)
    losses = trained.losses
    failures: list[Reply] = []
    keep: list[int] = []
    for k, good in enumerate(finite_rows(updates, losses)):
        if good:
            keep.append(k)
        else:
            cid = clients[k].client_id
            failures.append((cid, client_failed(cid, rnd, diverged(losses[k]))))
    if not keep:
        return failures, None
    if len(keep) < len(losses):
        index = torch.tensor(keep, dtype=torch.int64)
        updates = {name: t.index_select(0, index) for name, t in updates.items()}
    metas: list[dict[str, Any]] = [
        {
            "num_examples": len(clients[k].data),
            "train_loss": losses[k],
            "steps": trained.steps[k],
            **contexts[k].meta,
        }
        for k in keep
    ]
    size = len(clients[keep[0]].up.encode({n: t[0] for n, t in updates.items()}))
    ids = [clients[k].client_id for k in keep]
    return failures, GroupReply(rnd, ids, updates, metas, LOSSLESS, size)
