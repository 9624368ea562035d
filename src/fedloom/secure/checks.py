"""Config-time checks of secure aggregation against the rest of the run (``compat.CHECKS``).

Secure aggregation gives the server one weighted sum per round and nothing per client,
so every feature that needs an individual update or a per-client statistic at the server
is refused here, naming both keys.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from fedloom.core.errors import ConfigError
from fedloom.core.registry import REGISTRY
from fedloom.secure import graph
from fedloom.secure.encoding import resolve_bits

if TYPE_CHECKING:
    from fedloom.config import FedConfig
    from fedloom.secure.config import SecureConfig

DP_MIN_BITS = 8
"""Smallest modulus distributed DP accepts: it wraps on purpose (modular clipping)."""


def round_shape(secure: SecureConfig, n: int) -> tuple[int, int]:
    """``(neighbors, threshold)`` for ``n`` clients per round, defaults filled in."""
    k = graph.neighbor_count(n) if secure.neighbors is None else secure.neighbors
    t = graph.default_threshold(k) if secure.threshold is None else secure.threshold
    return k, t


def distributed_dp_needs_secagg(cfg: FedConfig) -> list[str]:
    if cfg.privacy.mode != "distributed" or cfg.secure.mode == "secagg":
        return []
    return [
        "privacy.mode=distributed splits the noise among the clients, which only protects "
        f"their sum: it needs secure.mode=secagg, not secure.mode={cfg.secure.mode}"
    ]


def secure_aggregation(cfg: FedConfig) -> list[str]:
    """Everything ``secure.mode=secagg`` cannot be combined with."""
    s = cfg.secure
    if s.mode == "none":
        return []
    ckks = s.mode == "ckks"
    problems = (_ckks_shape(cfg) if ckks else _shape(cfg)) + _server_side(cfg) + _privacy(cfg)
    up = cfg.compression.up
    if up != "none":
        sparse = up.split(":")[0] in ("topk", "randk")
        what = "sparsifies per client" if sparse else "re-encodes the update"
        carried = (
            "encrypts a dense float vector"
            if ckks
            else "masks a dense integer vector (its quantization, secure.quant_bits, is the "
            "compression)"
        )
        problems.append(
            f"compression.up={up} {what}, but secure.mode=secagg {carried}: use compression.up=none"
        )
    sim = cfg.simulation
    if getattr(sim, "vectorize", "off") == "on" or getattr(sim, "workers", 1) > 1:
        problems.append(
            "secure.mode=secagg runs its stage exchanges through the in-process transport; "
            "simulation.vectorize=on and simulation.workers>1 are not supported with it"
        )
    if cfg.privacy.mode == "distributed":  # then it is distributed DP that is refused
        named = "secure.mode=secagg (privacy.mode=distributed)"
        problems = [
            p if "privacy.mode" in p else p.replace("secure.mode=secagg", named, 1)
            for p in problems
        ]
    problems = [p.replace("secure.mode=secagg", f"secure.mode={s.mode}") for p in problems]
    if ckks and cfg.network.mode != "simulation":
        problems.append(
            f"secure.mode=ckks runs its key holder as a child of the simulation; "
            f"network.mode={cfg.network.mode} needs a key holder the server's operator does not "
            "control, which fedloom does not deploy yet: use secure.mode=secagg"
        )
    return problems


def _ckks_shape(cfg: FedConfig) -> list[str]:
    n = cfg.clients.per_round
    if n < 2:
        return [f"secure.mode=ckks needs clients.per_round >= 2 (a sum to hide in), got {n}"]
    if importlib.util.find_spec("tenseal") is None:
        return ["secure.mode=ckks needs TenSEAL: pip install 'fedloom[he]'"]
    return []


def _shape(cfg: FedConfig) -> list[str]:
    s, n = cfg.secure, cfg.clients.per_round
    if n < 2:
        return [f"secure.mode=secagg needs clients.per_round >= 2, got {n}"]
    problems = []
    k, t = round_shape(s, n)
    if k >= n:
        problems.append(f"secure.neighbors={k} must be below clients.per_round={n}")
    if t > k:
        problems.append(f"secure.threshold={t} exceeds secure.neighbors={k}")
    if cfg.privacy.mode == "distributed":
        if s.bits is not None and s.bits < DP_MIN_BITS:
            problems.append(f"secure.bits={s.bits}: privacy.mode=distributed needs >= 8")
        return problems
    try:
        resolve_bits(s.quant_bits, n, s.max_weight, s.bits)
    except ConfigError as error:
        problems.extend(
            f"{p} (clients.per_round={n}, secure.quant_bits, secure.max_weight)"
            for p in error.problems
        )
    return problems


def _server_side(cfg: FedConfig) -> list[str]:
    problems = []
    strategy = cfg.strategy
    caps = REGISTRY.component("strategy", strategy.name).capabilities
    if "central_dp" not in caps:
        problems.append(
            f"secure.mode=secagg gives the server only a weighted mean; strategy.name="
            f"{strategy.name} needs each client's update or extra state"
        )
    if strategy.aggregator != "mean":
        problems.append(
            f"strategy.aggregator={strategy.aggregator} needs every individual update, which "
            "secure.mode=secagg hides from the server (use strategy.aggregator=mean)"
        )
    if cfg.eval.client_fraction > 0:
        problems.append(
            f"eval.client_fraction={cfg.eval.client_fraction} reports each client's metrics "
            "in the clear, which secure.mode=secagg withholds; use eval.client_fraction=0"
        )
    return problems


def _privacy(cfg: FedConfig) -> list[str]:
    p, s = cfg.privacy, cfg.secure
    if p.mode == "central":
        return [
            "privacy.mode=central clips and noises at the server, which under "
            "secure.mode=secagg never sees an update: use privacy.mode=distributed"
        ]
    if p.mode == "local" and s.mode == "ckks":
        return [
            "privacy.mode=local with secure.mode=ckks: local noise inside an encrypted sum "
            "is not supported yet (use privacy.mode=none, or secure.mode=secagg with "
            "privacy.mode=distributed)"
        ]
    if p.mode == "local":
        return [
            "privacy.mode=local noises each update by noise_multiplier·clip per coordinate, "
            "far beyond secure.clip, which would clip it away under secure.mode=secagg: "
            "use privacy.mode=distributed (the noise inside the secure sum)"
        ]
    if p.mode != "distributed":
        return []
    problems = []
    if s.max_weight != 1:
        problems.append(
            f"privacy.mode=distributed bounds each client's contribution by privacy.clip; "
            f"secure.max_weight={s.max_weight} would scale it: use secure.max_weight=1"
        )
    if p.tiers or p.schedule != "constant":
        problems.append(
            "privacy.tiers and privacy.schedule are not supported with privacy.mode="
            "distributed (secure.mode=secagg): one noise multiplier for every round"
        )
    return problems
