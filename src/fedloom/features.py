"""The features applied to every federation's ``Parts``, in this order.

Order matters where features compose on the client's update: select what is trained
first, then clip and noise it, then compress what is sent.
"""

from __future__ import annotations

from collections.abc import Callable

from fedloom.parts import Parts

Feature = Callable[[Parts], None]

FEATURES: list[Feature] = []
