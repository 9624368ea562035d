"""What every privacy mode reports: ε, δ and the analysis behind ε in each metrics line,
the same plus RDP's ε in summary.json, and the budget stop before a round that would
spend more than ``privacy.max_epsilon``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedloom.parts import Parts
from fedloom.privacy.config import AccountantName, PrivacyConfig

EpsilonNow = Callable[[AccountantName], tuple[float, AccountantName]]
"""ε spent so far by an analysis, and the analysis that gave it (PRV falls back to RDP)."""
EpsilonNext = Callable[[int], float]
"""ε if round r ran as planned."""


def report(parts: Parts, cfg: PrivacyConfig, now: EpsilonNow, facts: dict[str, Any]) -> None:
    """Add ε, δ and the accountant to every metrics line and keep
    ``parts.notes['privacy']`` current, with RDP's ε beside the configured one."""
    summary: dict[str, Any] = {"mode": cfg.mode, "delta": cfg.delta, "accountant": cfg.accountant}
    summary.update(facts)
    parts.notes["privacy"] = summary

    def source(rnd: int) -> dict[str, Any]:
        eps, used = now(cfg.accountant)
        summary["epsilon"] = eps
        summary["epsilon_accountant"] = used
        summary["epsilon_rdp"] = eps if used == "rdp" else now("rdp")[0]
        return {"epsilon": eps, "delta": cfg.delta, "accountant": used}

    parts.metric_sources.append(source)


def budget_guard(parts: Parts, cfg: PrivacyConfig, after_next: EpsilonNext) -> None:
    """Stop cleanly before a round whose release would push ε above ``max_epsilon``."""
    limit = cfg.max_epsilon
    if limit is None:
        return

    def guard(rnd: int) -> str | None:
        eps = after_next(rnd)
        if eps <= limit:
            return None
        return (
            f"privacy budget: round {rnd} would bring epsilon to {eps:.4g} > "
            f"privacy.max_epsilon={limit:g} (delta={cfg.delta:g})"
        )

    parts.guards.append(guard)
