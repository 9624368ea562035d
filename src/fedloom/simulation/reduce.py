"""A round's partial results as one flat float64 buffer, and back.

Each rank streams its own clients' updates into the round's aggregator. The parts of an
aggregator that are sums (a ``WeightedSum``'s Σ w·u, Σ w and count; FedNova's Σ n and
Σ n·a) and the round's tally (bytes, loss sums, who failed or was rejected) are packed into
one float64 vector in a fixed order, all-reduced with SUM, and written back, so every rank
holds the totals of the whole round. Float64 keeps the result independent of how clients
were grouped, up to float64 rounding (far below the float32 of the model).

An aggregator that is not a sum (median, Krum, a claim-capped round that needs every
claim) has no entry in ``slots_of`` and is refused; ``fedloom.compat`` refuses the known
ones at config time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import singledispatch

import torch
from torch import Tensor

from fedloom.algorithms.fednova import NormalizedAverage
from fedloom.core.errors import FedloomError
from fedloom.server.aggregate import WeightedSum
from fedloom.server.server import RoundTally
from fedloom.server.strategy import SampleWeightedMean
from fedloom.server.weights import _Reweighted

Template = Mapping[str, Tensor]
"""Names, shapes and dtypes of one update (the global state and the strategy's extras)."""


@dataclass
class Slot:
    """A piece of a round's state that is a sum: how many floats, how to read and write them."""

    size: int
    pack: Callable[[], Tensor]
    unpack: Callable[[Tensor], None]


def weighted_sum_slot(acc: WeightedSum, template: Template) -> Slot:
    """Σ w·u (each tensor of ``template``, zeros where this rank saw no update), Σ w, count."""
    names = list(template)
    size = sum(t.numel() for t in template.values()) + 2

    def pack() -> Tensor:
        parts = [
            (acc._sum[n] if acc._sum else torch.zeros(template[n].numel(), dtype=torch.float64))
            .reshape(-1)
            .double()
            for n in names
        ]
        tail = torch.tensor([acc.weight, float(acc.count)], dtype=torch.float64)
        return torch.cat([*parts, tail])

    def unpack(flat: Tensor) -> None:
        count = round(float(flat[-1]))
        acc.weight, acc.count = float(flat[-2]), count
        if count == 0:  # as in one process: no update, no sum
            acc._sum, acc._dtypes = {}, {}
            return
        offset, total = 0, {}
        for n in names:
            k = template[n].numel()
            total[n] = flat[offset : offset + k].reshape(template[n].shape).clone()
            offset += k
        acc._sum, acc._dtypes = total, {n: template[n].dtype for n in names}

    return Slot(size, pack, unpack)


def scalar_slot(owner: object, attribute: str) -> Slot:
    """A float attribute that is a sum over clients."""

    def unpack(flat: Tensor) -> None:
        setattr(owner, attribute, float(flat[0]))

    return Slot(
        1, lambda: torch.tensor([float(getattr(owner, attribute))], dtype=torch.float64), unpack
    )


@singledispatch
def slots_of(aggregator: object, template: Template) -> list[Slot]:
    raise FedloomError(
        f"simulation.workers: the aggregator {type(aggregator).__name__} is not a sum and "
        "cannot be reduced across ranks; run with simulation.workers=1"
    )


@slots_of.register
def _(aggregator: _Reweighted, template: Template) -> list[Slot]:
    return slots_of(aggregator.inner, template)


@slots_of.register
def _(aggregator: SampleWeightedMean, template: Template) -> list[Slot]:
    return [weighted_sum_slot(aggregator.sum, template)]


@slots_of.register
def _(aggregator: NormalizedAverage, template: Template) -> list[Slot]:
    return [
        weighted_sum_slot(aggregator.directions, template),
        scalar_slot(aggregator, "examples"),
        scalar_slot(aggregator, "scaled_steps"),
    ]


_FAILED, _REJECTED = 1.0, 2.0
ELSEWHERE = "rejected by the rank that ran this client (see its log)"


def tally_slot(tally: RoundTally, sampled: Sequence[str]) -> Slot:
    """Each sampled client's outcome (0 accepted or not run here, 1 failed, 2 rejected),
    then bytes up, the loss sum and its weight, and the non-finite count."""
    n = len(sampled)

    def pack() -> Tensor:
        status = torch.zeros(n + 4, dtype=torch.float64)
        for i, cid in enumerate(sampled):
            if cid in tally.rejected:
                status[i] = _REJECTED
            elif cid in tally.failed:
                status[i] = _FAILED
        status[n:] = torch.tensor(
            [tally.bytes_up, tally.loss_sum, tally.examples, tally.non_finite],
            dtype=torch.float64,
        )
        return status

    def unpack(flat: Tensor) -> None:
        status = flat[:n].tolist()
        tally.failed = [cid for cid, s in zip(sampled, status, strict=True) if s == _FAILED]
        tally.rejected = {
            cid: tally.rejected.get(cid, ELSEWHERE)
            for cid, s in zip(sampled, status, strict=True)
            if s == _REJECTED
        }
        bytes_up, loss_sum, examples, non_finite = flat[n:].tolist()
        tally.bytes_up, tally.loss_sum = round(bytes_up), loss_sum
        tally.examples, tally.non_finite = round(examples), round(non_finite)

    return Slot(n + 4, pack, unpack)


def pack(slots: Sequence[Slot]) -> Tensor:
    """One flat float64 vector of every slot, in order."""
    return torch.cat([slot.pack() for slot in slots])


def unpack(slots: Sequence[Slot], flat: Tensor) -> None:
    """Write ``flat`` (a reduced ``pack``) back into every slot."""
    expected = sum(slot.size for slot in slots)
    if flat.numel() != expected:
        raise ValueError(f"reduced buffer has {flat.numel()} values, expected {expected}")
    offset = 0
    for slot in slots:
        slot.unpack(flat[offset : offset + slot.size])
        offset += slot.size
