"""Which features compose: every check that needs two sections of the config, in one place.

``FedConfig`` runs ``problems(config)`` when it is validated, before any data loads or
model is built. Each problem names both features (a key and its value). The strategy
checks read the capabilities a registered strategy declares (``fedloom.builtins``), so a
plugin strategy is refused with central DP, DP-SGD or a robust aggregator until it says
it supports them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from fedloom.core.registry import REGISTRY
from fedloom.secure.checks import distributed_dp_needs_secagg, secure_aggregation
from fedloom.simulation.checks import vectorized_clients
from fedloom.simulation.pool_checks import pooled_clients

if TYPE_CHECKING:
    from fedloom.config import FedConfig

Check = Callable[["FedConfig"], list[str]]


def _caps(cfg: FedConfig) -> frozenset[str]:
    return REGISTRY.component("strategy", cfg.strategy.name).capabilities


def _with_names(kind: str, capability: str) -> str:
    return ", ".join(c.name for c in REGISTRY.components(kind) if capability in c.capabilities)


def central_dp(cfg: FedConfig) -> list[str]:
    if cfg.privacy.mode != "central":
        return []
    problems = []
    s = cfg.strategy
    if "central_dp" not in _caps(cfg):
        problems.append(
            f"privacy.mode=central replaces the aggregator; strategy.name={s.name} needs its "
            f"own (use one of: {_with_names('strategy', 'central_dp')})"
        )
    if s.aggregator != "mean":
        problems.append(
            "privacy.mode=central clips and sums every update itself; "
            f"strategy.aggregator={s.aggregator} cannot be combined with it (use mean)"
        )
    return problems


def dpsgd(cfg: FedConfig) -> list[str]:
    if cfg.privacy.mode != "dpsgd" or "dpsgd" in _caps(cfg):
        return []
    return [
        f"privacy.mode=dpsgd replaces the clients' training; strategy.name={cfg.strategy.name} "
        f"changes it (use one of: {_with_names('strategy', 'dpsgd')})"
    ]


def dpsgd_trainer(cfg: FedConfig) -> list[str]:
    if cfg.privacy.mode != "dpsgd" or cfg.train.trainer == "sgd":
        return []
    return [
        f"privacy.mode=dpsgd trains with its own per-sample clipping trainer; "
        f"train.trainer={cfg.train.trainer} would be replaced (use train.trainer=sgd)"
    ]


def dpsgd_train_step(cfg: FedConfig) -> list[str]:
    if cfg.privacy.mode != "dpsgd" or "train_step" not in cfg.task.custom:
        return []
    return [
        "privacy.mode=dpsgd needs per-sample gradients of the task's loss; a custom "
        "train_step (task.custom) hides it: pass loss= instead (a mean over the batch)"
    ]


def client_side_dp_over_network(cfg: FedConfig) -> list[str]:
    mode = cfg.privacy.mode
    if mode not in ("local", "dpsgd") or cfg.network.mode == "simulation":
        return []
    return [
        f"privacy.mode={mode} accounts on each client and is not supported over the network "
        f"(network.mode={cfg.network.mode}: the server could not report or enforce ε); use "
        "privacy.mode=central, or run it in simulation"
    ]


def step_claims(cfg: FedConfig) -> list[str]:
    """A strategy that trusts the clients' step counts needs the server's own sizes."""
    caps = _caps(cfg)
    problems = []
    if "bounds_step_claims" in caps and cfg.network.client_weights == "claimed":
        # a_k is bounded by the steps planned for the client's size; with claimed sizes
        # that bound would rest on the client's own claim, and τ_eff scales every update
        problems.append(
            f"strategy.name={cfg.strategy.name} cannot be combined with "
            "network.client_weights=claimed (the step bound would trust the client's "
            "claim); use client_weights=server or network.client_sizes_file"
        )
    if "counts_steps" in caps and cfg.train.weight_decay > 0:
        problems.append(
            f"train.weight_decay: strategy.name={cfg.strategy.name} normalizes by the local "
            "step count of plain SGD; set train.weight_decay=0"
        )
    return problems


def robust_aggregator(cfg: FedConfig) -> list[str]:
    """Krum's bound on the clients a round must have."""
    s, n = cfg.strategy, cfg.clients.per_round
    problems = []
    if s.aggregator in ("krum", "multikrum") and n < 2 * s.krum_f + 3:
        problems.append(
            f"strategy.krum_f: Krum tolerating f={s.krum_f} needs clients.per_round >= "
            f"2f+3 = {2 * s.krum_f + 3}, got {n}"
        )
    if s.aggregator == "multikrum" and s.multikrum_m is not None and s.multikrum_m > n:
        problems.append(f"strategy.multikrum_m ({s.multikrum_m}) exceeds clients.per_round ({n})")
    return problems


def pruning(cfg: FedConfig) -> list[str]:
    mode = cfg.finetune.mode
    if cfg.compression.prune == 0 or mode == "full":
        return []
    return [
        f"compression.prune prunes the whole global model; with finetune.mode={mode} only "
        "a part of it (LoRA adapters, the selected layers) is global: use finetune.mode=full"
    ]


def importance(cfg: FedConfig) -> list[str]:
    f, privacy = cfg.finetune, cfg.privacy.mode
    if f.mode != "importance" or f.importance_source != "clients" or privacy == "none":
        return []
    return [
        f"finetune.mode=importance with privacy.mode={privacy}: scoring on the clients' data "
        "is an unnoised release outside epsilon; set finetune.importance_source=weights "
        "(scores from the pretrained weights)"
    ]


def client_evaluation(cfg: FedConfig) -> list[str]:
    fraction, privacy = cfg.eval.client_fraction, cfg.privacy
    if fraction > 0 and privacy.mode == "dpsgd":
        # DP-SGD calibrates each client from its data size; the holdout changes it
        return [
            f"eval.client_fraction={fraction} holds out part of each client's data, which "
            "privacy.mode=dpsgd's per-client calibration does not see; use eval."
            "client_fraction=0 with dpsgd"
        ]
    if fraction == 0 or not privacy.withholds_client_info:
        return []
    return [
        f"eval.client_fraction={fraction} reports each client's own metrics, which "
        f"privacy.mode={privacy.mode} does not cover; set privacy.release_client_info=true "
        "to release them anyway, or eval.client_fraction=0"
    ]


def accelerator(cfg: FedConfig) -> list[str]:
    """Client-side pieces that keep their tensors on the CPU cannot train on a device."""
    device = cfg.compute.device
    if device == "cpu":
        return []
    problems = []
    if "any_device" not in _caps(cfg):
        problems.append(
            f"compute.device={device}: strategy.name={cfg.strategy.name} corrects local "
            "training with CPU-held state; use compute.device=cpu"
        )
    if cfg.privacy.mode == "dpsgd":
        problems.append(
            f"compute.device={device}: privacy.mode=dpsgd draws its noise on the CPU; "
            "use compute.device=cpu"
        )
    return problems


def devices(cfg: FedConfig) -> list[str]:
    if not cfg.devices.enabled or cfg.network.mode == "simulation":
        return []
    return [
        f"devices.enabled: simulated devices need network.mode=simulation, not {cfg.network.mode}"
    ]


def tracking_installed(cfg: FedConfig) -> list[str]:
    from fedloom.report.config import missing_backends

    return missing_backends(cfg.logging)


def _ranks(cfg: FedConfig) -> int:
    """Ranks sharing the rounds: torchrun's WORLD_SIZE, else ``simulation.workers``."""
    world = os.environ.get("WORLD_SIZE")
    return int(world) if world and world.isdigit() else cfg.simulation.workers


def _buffers(cfg: FedConfig) -> bool:
    name = cfg.strategy.aggregator
    return any(
        c.name == name and "buffers" in c.capabilities for c in REGISTRY.components("aggregator")
    )


def distributed_ranks(cfg: FedConfig) -> list[str]:
    """What the torch.distributed engine cannot share: each rank sums only its own clients."""
    ranks = _ranks(cfg)
    if ranks <= 1:
        return []
    torchrun = "WORLD_SIZE" in os.environ
    key = f"torchrun's {ranks} ranks (WORLD_SIZE)" if torchrun else f"simulation.workers={ranks}"
    s = cfg.strategy
    refusals = [
        (
            "ranks" not in _caps(cfg),
            f"strategy.name={s.name} does not aggregate by a sum the ranks can all-reduce "
            f"(use one of: {_with_names('strategy', 'ranks')})",
        ),
        (
            _buffers(cfg),
            f"strategy.aggregator={s.aggregator} needs every update in one place (use mean)",
        ),
        (
            cfg.network.mode != "simulation",
            f"network.mode={cfg.network.mode}: ranks share simulated clients only",
        ),
        (
            cfg.network.client_weights == "claimed" and cfg.privacy.mode == "none",
            "network.client_weights=claimed caps each claim by the median of the whole "
            "round's claims (use server or uniform)",
        ),
        (
            cfg.privacy.mode != "none",
            f"privacy.mode={cfg.privacy.mode} keeps its accounting where the clients run "
            "(use simulation.workers=1)",
        ),
        (
            cfg.compression.error_feedback and cfg.compression.up != "none",
            f"compression.up={cfg.compression.up} with compression.error_feedback=true keeps "
            "a residual on each client (set compression.error_feedback=false)",
        ),
        (
            cfg.devices.enabled,
            "devices.enabled: the simulated clock must see every client of a round",
        ),
        (
            cfg.eval.client_fraction > 0,
            f"eval.client_fraction={cfg.eval.client_fraction}: client evaluations are "
            "collected where the clients run (use eval.client_fraction=0)",
        ),
        (
            cfg.secure.mode != "none",
            f"secure.mode={cfg.secure.mode} runs its own multi-exchange round",
        ),
        (
            cfg.compute.device.startswith("cuda:"),
            f"compute.device={cfg.compute.device} names one GPU; each rank takes its own "
            "(use compute.device=cuda)",
        ),
    ]
    problems = [f"{key} cannot be combined with {why}" for refused, why in refusals if refused]
    if cfg.compute.device == "cuda" and not torchrun:  # torchrun: checked as each rank joins
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count < ranks:
            problems.append(
                f"{key} with compute.device=cuda needs one GPU per rank (NCCL cannot share "
                f"one), this machine has {count}: set simulation.workers<={count}"
            )
    return problems


def distillation(cfg: FedConfig) -> list[str]:
    """Heterogeneous clients need a strategy that keeps one model per architecture
    (``heterogeneous``); such a strategy changes what the server holds and the clients
    send, which these features cannot follow."""
    name = cfg.strategy.name
    if "heterogeneous" not in _caps(cfg):
        if not cfg.clients.models:
            return []
        return [
            f"clients.models gives clients different architectures; strategy.name={name} "
            f"averages one model (use one of: {_with_names('strategy', 'heterogeneous')})"
        ]
    key = f"strategy.name={name}"
    refusals = [
        (
            cfg.privacy.mode == "local",
            "privacy.mode=local: its accounting does not cover the class scores the server "
            "distils from (use privacy.mode=none)",
        ),
        (
            cfg.compression.prune > 0,
            "compression.prune prunes one global model (set compression.prune=0)",
        ),
        (
            cfg.finetune.mode != "full",
            f"finetune.mode={cfg.finetune.mode}: distillation trains whole models (use "
            "finetune.mode=full)",
        ),
        (
            cfg.task.name != "classification",
            f"task.name={cfg.task.name}: distillation matches class scores (use "
            "task.name=classification)",
        ),
        (
            bool(cfg.clients.models) and cfg.model.checkpoint is not None,
            "model.checkpoint holds one architecture's weights, and clients.models lists "
            "several (leave model.checkpoint unset)",
        ),
        (
            len(cfg.clients.models) > 1
            and name != "fedmd"
            and cfg.compression.error_feedback
            and cfg.compression.up not in ("none", "f32")
            and cfg.network.mode == "simulation",
            f"compression.up={cfg.compression.up} with compression.error_feedback=true and "
            "several clients.models: the client store keeps one residual layout for all "
            "(set compression.error_feedback=false)",
        ),
        (
            cfg.secure.mode != "none",
            f"secure.mode={cfg.secure.mode}: the ensemble needs each client's model (use "
            "secure.mode=none)",
        ),
        (
            cfg.simulation.vectorize != "off",
            f"simulation.vectorize={cfg.simulation.vectorize} trains one shared architecture "
            "(use simulation.vectorize=off)",
        ),
        (
            name == "feddf"
            and cfg.distill.optimizer == "adam"
            and cfg.distill.step_scale is not None
            and cfg.distill.lr is not None,
            f"distill.lr={cfg.distill.lr}: with distill.optimizer=adam each step is sized by "
            f"distill.step_scale={cfg.distill.step_scale}, so the rate would be ignored (set "
            "distill.step_scale=null to use distill.lr)",
        ),
    ]
    return [f"{key} cannot be combined with {why}" for refused, why in refusals if refused]


CHECKS: list[Check] = [
    central_dp,
    dpsgd,
    dpsgd_trainer,
    dpsgd_train_step,
    client_side_dp_over_network,
    step_claims,
    robust_aggregator,
    pruning,
    importance,
    client_evaluation,
    accelerator,
    devices,
    distributed_ranks,
    tracking_installed,
    secure_aggregation,
    distributed_dp_needs_secagg,
    vectorized_clients,
    pooled_clients,
    distillation,
]


def problems(cfg: FedConfig) -> list[str]:
    return [problem for check in CHECKS for problem in check(cfg)]
