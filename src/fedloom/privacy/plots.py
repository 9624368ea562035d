"""Budget-aware plots of a DP run: ε against round (one line per tier, with each tier's
budget dashed) and test accuracy against ε."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def plot_privacy(
    metrics: Sequence[dict[str, Any]], directory: Path, budgets: Sequence[float] = ()
) -> list[Path]:
    """``epsilon.png`` and ``accuracy_vs_epsilon.png`` for a run whose metrics carry ε
    (nothing for a run without DP)."""
    rows = [m for m in metrics if m.get("epsilon") is not None]
    if not rows:
        return []
    rounds = [m["round"] for m in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    by_tier = [m.get("epsilon_by_tier") for m in rows]
    if all(by_tier):
        for t in range(len(by_tier[0] or [])):
            line = ax.plot(rounds, [e[t] for e in by_tier if e], marker=".", label=f"tier {t}")
            if t < len(budgets):
                ax.axhline(budgets[t], color=line[0].get_color(), linestyle="--", alpha=0.5)
    ax.plot(rounds, [m["epsilon"] for m in rows], color="black", label="epsilon (max)")
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"epsilon (delta={rows[0].get('delta')})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    written = [directory / "epsilon.png"]
    fig.savefig(written[0], dpi=100)
    plt.close(fig)
    points = [
        (m["epsilon"], m["test_accuracy"]) for m in rows if m.get("test_accuracy") is not None
    ]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p[0] for p in points], [p[1] for p in points], marker=".")
    ax.set_xlabel("epsilon spent (max over tiers)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(directory / "accuracy_vs_epsilon.png")
    fig.savefig(written[1], dpi=100)
    plt.close(fig)
    return written
