"""The ``algorithms`` feature: the strategy adds its client-side pieces (a trainer penalty,
a grad hook, an update transform) through ``Strategy.prepare``."""

from __future__ import annotations

from fedloom.parts import Parts


def apply_algorithms(parts: Parts) -> None:
    parts.strategy.prepare(parts)
