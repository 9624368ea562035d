"""The ``privacy`` feature: one builder per ``privacy.mode``, chosen from a registry."""

from __future__ import annotations

from collections.abc import Callable

from fedloom.core.errors import ConfigError
from fedloom.parts import Parts

Builder = Callable[[Parts], None]


def _central(parts: Parts) -> None:
    from fedloom.privacy.modes import build_central

    build_central(parts)


def _local(parts: Parts) -> None:
    from fedloom.privacy.modes import build_local

    build_local(parts)


def _dpsgd(parts: Parts) -> None:
    from fedloom.privacy.dpsgd import build_dpsgd

    build_dpsgd(parts)


# Opacus is imported only when a mode needs it (it is the ``privacy`` extra).
_MODES: dict[str, Builder] = {"central": _central, "local": _local, "dpsgd": _dpsgd}


def apply_privacy(parts: Parts) -> None:
    """Make the federation differentially private as ``privacy.mode`` says."""
    mode = parts.config.privacy.mode
    if mode == "none":
        return
    try:
        _MODES[mode](parts)
    except ModuleNotFoundError as missing:
        raise ConfigError(
            [f"privacy.mode={mode} needs {missing.name}: pip install 'fedloom[privacy]'"]
        ) from None
