"""Config-time checks of ``simulation.vectorize=on`` against the other sections.

Torch-free (``fedloom.compat`` runs it while the config is validated). What only the
built model can tell (a batch-norm module, a plugin's trainer) is refused at assembly
(``fedloom.simulation.vectorize_feature``); ``auto`` never refuses, it falls back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedloom.config import FedConfig

UNVECTORIZED_CODE = ("optimizer", "train_step", "augment")
"""A user's callables the vectorized SGD step cannot run."""


def vectorized_clients(cfg: FedConfig) -> list[str]:
    if cfg.simulation.vectorize != "on":
        return []
    key, fallback = "simulation.vectorize=on", "use simulation.vectorize=auto or off"
    problems = []
    if cfg.privacy.mode == "dpsgd":
        problems.append(
            f"{key} trains plain SGD steps; privacy.mode=dpsgd clips per sample and draws "
            f"Poisson batches of varying size, which are not vectorized: {fallback}"
        )
    if cfg.network.mode != "simulation":
        problems.append(
            f"{key} trains simulated clients together; network.mode={cfg.network.mode} has "
            f"none in this process: {fallback}"
        )
    if cfg.train.trainer != "sgd":
        problems.append(
            f"{key} replaces the local trainer by vectorized SGD; train.trainer="
            f"{cfg.train.trainer} would be bypassed: {fallback}"
        )
    custom = [name for name in cfg.task.custom if name in UNVECTORIZED_CODE]
    if custom:
        problems.append(
            f"{key} cannot run a custom {', '.join(custom)} (task.custom) inside its batched "
            f"step: {fallback}"
        )
    return problems
