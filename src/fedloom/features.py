"""The features applied to every federation's ``Parts``, in this order.

Order matters where features compose on the client's update: select what is trained
first, then clip and noise it, then compress what is sent.
"""

from __future__ import annotations

from collections.abc import Callable

from fedloom.algorithms.feature import apply_algorithms
from fedloom.compression.feature import compression_feature
from fedloom.finetune.feature import finetune_feature
from fedloom.network.feature import grpc_feature
from fedloom.parts import Parts
from fedloom.privacy.feature import apply_privacy
from fedloom.robust.feature import apply_attacks
from fedloom.simulation.feature import apply_devices

Feature = Callable[[Parts], None]

FEATURES: list[Feature] = [
    finetune_feature,
    apply_attacks,
    apply_privacy,
    compression_feature,
    apply_algorithms,
    apply_devices,
    grpc_feature,
]
