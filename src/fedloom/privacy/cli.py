"""``fedloom audit CONFIG``: the empirical ε lower bound next to the accountant's ε.

Registered on the main typer app by ``register``; exit code 3 flags a violation
(lower bound above the accountant's upper bound), so scripts and CI can gate on it.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedloom.config import load_config
from fedloom.core.errors import ConfigError, FedloomError

console = Console(stderr=True)
VIOLATION_EXIT = 3


def audit(
    args: Annotated[
        list[str] | None,
        typer.Argument(help="[CONFIG.yaml] [dotted.key=value ...]", show_default=False),
    ] = None,
    trials: Annotated[int, typer.Option(min=20, help="Independent runs of the game.")] = 1000,
    confidence: Annotated[float, typer.Option(min=0.5, max=0.9999)] = 0.95,
    broken: Annotated[
        str, typer.Option(help="Positive control: none | no_noise | no_clip.")
    ] = "none",
) -> None:
    """Audit the central DP mechanism with a canary client: empirical ε lower bound."""
    from fedloom.privacy.audit import audit_config

    items = args or []
    path, overrides = (items[0], items[1:]) if items and "=" not in items[0] else (None, items)
    try:
        if broken not in ("none", "no_noise", "no_clip"):
            raise ConfigError([f"--broken must be none, no_noise or no_clip, got {broken!r}"])
        config = load_config(path, overrides)
        result = audit_config(config, trials=trials, confidence=confidence, broken=broken)  # type: ignore[arg-type]
    except FedloomError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2 if isinstance(error, ConfigError) else 1) from None
    table = Table(title=f"privacy audit ({result.trials} runs, δ={config.privacy.delta:g})")
    for column in ("ε lower bound", "confidence", "ε accountant", "FPR", "FNR", "mechanism"):
        table.add_column(column)
    table.add_row(
        f"{result.epsilon_lower:.3f}",
        f"{result.confidence:.0%}",
        f"{result.epsilon_upper:.3f}",
        f"{result.fpr:.3f}",
        f"{result.fnr:.3f}",
        result.broken,
    )
    console.print(table)
    if result.violation:
        console.print("[red]VIOLATION:[/] the mechanism leaks more than the accountant claims")
        raise typer.Exit(VIOLATION_EXIT)
    console.print("[green]consistent:[/] lower bound ≤ accountant's ε")


def register(app: typer.Typer) -> None:
    app.command(name="audit")(audit)
