"""Update transforms: what happens to a client's update between training and encoding.

Each feature that changes the update (an attack, SCAFFOLD's control delta, clipping,
local DP noise) adds a named ``Transform`` and says which others it must follow or
precede; ``order_transforms`` puts them in an order that satisfies every constraint, at
assembly time, and refuses a cycle. A constraint naming a transform that is not in the
run orders nothing. Among transforms the constraints leave free, the order they were
added in is kept, so a run's order is deterministic.

The built-in names and their constraints give: attack → clip → local_dp → the algorithm
transforms that describe the clipped and noised update (``scaffold``, ``fednova``). Quantizing
and sparsifying (with error feedback) happen in the uplink codec, after every transform.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fedloom.client.context import UpdateHook
from fedloom.core.errors import ConfigError

ATTACK = "attack"
CLIP = "clip"
LOCAL_DP = "local_dp"
SCAFFOLD = "scaffold"
FEDNOVA = "fednova"


@dataclass(frozen=True)
class Transform:
    name: str
    apply: UpdateHook
    after: tuple[str, ...] = ()
    """Transforms that must run before this one (when present)."""
    before: tuple[str, ...] = ()
    """Transforms that must run after this one (when present)."""


def order_transforms(transforms: Sequence[Transform]) -> list[Transform]:
    """``transforms`` in an order that meets every ``after``/``before``; a ``ConfigError``
    naming the transforms of a cycle, or a name added twice."""
    index = {t.name: i for i, t in enumerate(transforms)}
    if len(index) != len(transforms):
        names = [t.name for t in transforms]
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError([f"update transform(s) added twice: {twice}"])
    graph: dict[str, set[str]] = {t.name: set() for t in transforms}
    for t in transforms:
        graph[t.name] |= {n for n in t.after if n in index}
        for later in t.before:
            if later in index:
                graph[later].add(t.name)
    sorter = graphlib.TopologicalSorter(graph)
    try:
        sorter.prepare()
    except graphlib.CycleError as error:
        cycle = " -> ".join(error.args[1])
        raise ConfigError([f"update transforms have contradictory order: {cycle}"]) from None
    ordered: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=index.__getitem__)
        ordered.extend(ready)
        sorter.done(*ready)
    return [transforms[index[n]] for n in ordered]


def hooks_of(transforms: Iterable[Transform]) -> list[UpdateHook]:
    return [t.apply for t in transforms]
