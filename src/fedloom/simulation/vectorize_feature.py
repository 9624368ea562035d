"""The ``simulation.vectorize`` feature: swap the in-process transport for the vectorized
one when the run's clients can be trained together (``fedloom.simulation.group``).

``off`` trains one client at a time. ``on`` vectorizes or refuses the run with a
``ConfigError`` naming what is in the way (a batch-norm module, DP-SGD's trainer, ...);
a model with dropout is vectorized with vmap's ``randomness='different'``: per-client
masks from one seeded stream per group, reproducible, but not the masks the sequential
path draws. ``auto`` vectorizes only where the result equals the sequential path (no
dropout) and where it is expected to be faster, and otherwise says why once, at info
level, and trains one by one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch

from fedloom.algorithms.scaffold import drift_correction
from fedloom.core.errors import ConfigError
from fedloom.data.base import TensorData
from fedloom.parts import Parts
from fedloom.simulation.eligibility import Eligibility, check_eligibility
from fedloom.simulation.group import GROUP_SIZE, GroupPlan, VectorizedTransport
from fedloom.simulation.vectorized import Randomness, StepRule
from fedloom.transport.base import Transport
from fedloom.transport.inprocess import Handler, InProcessTransport

log = logging.getLogger(__name__)

AUTO_MAX_STACKED = 50_000_000
"""``auto`` vectorizes while a group's stacked trainable weights (clients per group ×
trainable parameters) stay under this many elements (200 MB in float32, times three with
the gradients and momentum): faster for W1's CNN and W2's logistic regression
(docs/scale.md), but a group of large models would trade memory for it."""


def _example(parts: Parts) -> TensorData | None:
    """Two training examples of client 0, for the trial; None if the data is not in
    memory (a lazily read split)."""
    own = parts.client_data or parts.data.client
    data = own(0) if parts.config.clients.num else parts.data.train
    if not isinstance(data, TensorData):
        return None
    return data.subset(torch.arange(min(2, len(data))))


def _eligibility(parts: Parts) -> Eligibility:
    example = _example(parts)
    if example is None:
        return Eligibility(["the clients' data is read lazily (not in-memory tensors)"])
    fedprox = parts.config.strategy.name == "fedprox"
    found = check_eligibility(parts.model, parts.trainer, example, fedprox=fedprox)
    if parts.transport is not InProcessTransport:
        found.blockers.append("another feature replaced the in-process transport")
    return found


def _refuse(blockers: list[str]) -> ConfigError:
    return ConfigError(
        [
            f"simulation.vectorize=on cannot train these clients together: {why}; use "
            "simulation.vectorize=auto or off"
            for why in blockers
        ]
    )


def apply_vectorize(parts: Parts) -> None:
    cfg = parts.config
    mode = cfg.simulation.vectorize
    if mode == "off" or cfg.network.mode != "simulation":
        return
    found = _eligibility(parts)
    if found.blockers:
        if mode == "on":
            raise _refuse(found.blockers)
        log.info(
            "simulation.vectorize=auto: clients train one by one: %s", "; ".join(found.blockers)
        )
        return
    randomness: Randomness = "different" if found.random_modules else "error"
    modules = ", ".join(found.random_modules)
    if mode == "auto":
        size = sum(p.numel() for p in parts.model.parameters() if p.requires_grad)
        stacked = size * min(cfg.clients.per_round, GROUP_SIZE)
        reason = (
            f"{modules} draw random masks, which vectorized clients cannot draw as the "
            "sequential path does"
            if found.random_modules
            else f"a group's stacked weights would hold {stacked:,} elements "
            f"(> {AUTO_MAX_STACKED:,})"
            if stacked > AUTO_MAX_STACKED
            else ""
        )
        if reason:
            log.info("simulation.vectorize=auto: clients train one by one: %s", reason)
            return
    elif found.random_modules:
        log.info(
            "simulation.vectorize=on: %s get per-client masks (vmap randomness='different'); "
            "reproducible, but not equal to simulation.vectorize=off",
            modules,
        )
    train = cfg.train
    mu = cfg.strategy.mu if cfg.strategy.name == "fedprox" else 0.0
    plan = GroupPlan(
        StepRule(train.lr, train.momentum, train.weight_decay, mu),
        randomness,
        scaffold=drift_correction in parts.trainer.grad_hooks,
    )

    def build(handlers: Mapping[str, Handler]) -> Transport:
        return VectorizedTransport(handlers, plan)

    parts.transport = build
    parts.notes["vectorized_clients"] = True
