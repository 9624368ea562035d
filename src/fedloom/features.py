"""The features applied to every federation's ``Parts``, in this order.

Each adds to the parts it cares about. Where features compose on the client's update,
the order is not this list's: each update transform declares what it must follow or
precede (``fedloom.client.transforms``). This order matters only where a feature reads
what an earlier one chose: compression and the gRPC feature bound uploads by the
trainable tensors fine-tuning selected and the strategy's extras.
"""

from __future__ import annotations

from collections.abc import Callable

from fedloom.algorithms.feature import apply_algorithms
from fedloom.compression.feature import compression_feature
from fedloom.distill.feature import distill_feature
from fedloom.evaluation.feature import client_evaluation
from fedloom.finetune.feature import finetune_feature
from fedloom.network.feature import grpc_feature
from fedloom.parts import Parts
from fedloom.privacy.feature import apply_privacy
from fedloom.robust.feature import apply_attacks
from fedloom.secure.feature import secure_feature
from fedloom.simulation.feature import apply_devices
from fedloom.simulation.vectorize_feature import apply_vectorize

Feature = Callable[[Parts], None]

FEATURES: list[Feature] = [
    distill_feature,  # first: the distillation data leave the clients' data before all else
    client_evaluation,  # before attacks: a client's held-out data is its own, unpoisoned
    finetune_feature,
    apply_attacks,
    apply_privacy,
    compression_feature,
    apply_algorithms,
    secure_feature,  # wraps the clients' handlers; vectorized clients and devices wrap it
    apply_vectorize,  # after the trainer is final; devices wrap its transport
    apply_devices,
    grpc_feature,
]
