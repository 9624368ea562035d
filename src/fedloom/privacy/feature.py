"""The ``privacy`` feature: one builder per ``privacy.mode``, chosen from a registry."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext

from fedloom.core.errors import ConfigError
from fedloom.parts import Parts
from fedloom.privacy.config import PrivacyConfig
from fedloom.report.progress import phase
from fedloom.server.sampler import UniformSampler

log = logging.getLogger(__name__)

SEEDED_WARNING = (
    "privacy.secure_rng=false: client sampling, DP-SGD batches and privacy noise follow "
    "`seed`; the run is reproducible and for research only: anyone who knows the seed can "
    "recompute who took part and the noise. Set privacy.secure_rng=true to deploy"
)
RELEASE_WARNING = (
    "privacy.release_client_info=true: client ids and per-client statistics are written to "
    "the run directory; they are not covered by the reported epsilon"
)

Builder = Callable[[Parts], None]


def calibrates(cfg: PrivacyConfig) -> bool:
    """Whether building the mode solves for noise or rates (a target ε or tiers)."""
    return cfg.noise_multiplier is None or bool(cfg.tiers)


def _central(parts: Parts) -> None:
    from fedloom.privacy.modes import build_central

    build_central(parts)


def _local(parts: Parts) -> None:
    from fedloom.privacy.modes import build_local

    build_local(parts)


def _dpsgd(parts: Parts) -> None:
    from fedloom.privacy.dpsgd import build_dpsgd

    build_dpsgd(parts)


def _distributed(parts: Parts) -> None:
    """Nothing here: the noise is part of secure aggregation's encoding, which the
    ``secure`` feature builds with its accountant (``fedloom.privacy.ddg``)."""


# Opacus is imported only when a mode needs it (it is the ``privacy`` extra).
_MODES: dict[str, Builder] = {
    "central": _central,
    "local": _local,
    "dpsgd": _dpsgd,
    "distributed": _distributed,
}


def apply_privacy(parts: Parts) -> None:
    """Make the federation differentially private as ``privacy.mode`` says."""
    cfg = parts.config.privacy
    mode = cfg.mode
    if mode == "none":
        return
    if not cfg.secure_rng:
        log.warning(SEEDED_WARNING)
    else:  # central mode replaces it with a secure Poisson sampler
        fed = parts.config
        parts.sampler = UniformSampler(fed.clients.num, fed.clients.per_round, fed.seed, True)
    if cfg.release_client_info:
        log.warning(RELEASE_WARNING)
    try:
        with phase("privacy calibration") if calibrates(cfg) else nullcontext():
            _MODES[mode](parts)
    except ModuleNotFoundError as missing:
        raise ConfigError(
            [f"privacy.mode={mode} needs {missing.name}: pip install 'fedloom[privacy]'"]
        ) from None
