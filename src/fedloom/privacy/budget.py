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
RoundFacts = Callable[[int], dict[str, Any]]
"""What a mode adds to round r's metrics line (its noise multiplier, per-tier ε ...)."""


def report(
    parts: Parts,
    cfg: PrivacyConfig,
    now: EpsilonNow,
    facts: dict[str, Any],
    per_round: RoundFacts | None = None,
) -> None:
    """Add ε, δ and the accountant (and ``per_round``'s facts) to every metrics line and
    keep ``parts.notes['privacy']`` current, with RDP's ε beside the configured one and
    the latest round's facts."""
    summary: dict[str, Any] = {"mode": cfg.mode, "delta": cfg.delta, "accountant": cfg.accountant}
    summary.update(facts)
    parts.notes["privacy"] = summary

    def source(rnd: int) -> dict[str, Any]:
        eps, used = now(cfg.accountant)
        summary["epsilon"] = eps
        summary["epsilon_accountant"] = used
        summary["epsilon_rdp"] = eps if used == "rdp" else now("rdp")[0]
        line = {"epsilon": eps, "delta": cfg.delta, "accountant": used}
        if per_round is not None:
            extra = per_round(rnd)
            line.update(extra)
            summary.update(
                {f"last_{k}" if k == "noise_multiplier" else k: v for k, v in extra.items()}
            )
        return line

    parts.metric_sources.append(source)


def largest(
    answers: list[tuple[float, AccountantName]], kind: AccountantName
) -> tuple[float, AccountantName]:
    """The largest ε of several (per tier, per client) and the analysis behind it."""
    return max(answers, default=(0.0, kind), key=lambda answer: answer[0])


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
