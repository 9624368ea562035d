"""``fedloom audit CONFIG``: the empirical per-round (DP-SGD: per-step) ε lower bound next
to the accountant's.

Registered on the main typer app by ``register``; exit code 3 flags a violation
(lower bound above the accountant's ε at the same δ), so scripts and CI can gate on it.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from fedloom.config import load_config
from fedloom.core.errors import ConfigError, FedloomError
from fedloom.terminal import console, fail

VIOLATION_EXIT = 3


def audit(
    args: Annotated[
        list[str] | None,
        typer.Argument(help="[CONFIG.yaml] [dotted.key=value ...]", show_default=False),
    ] = None,
    canaries: Annotated[
        int,
        typer.Option(
            min=20, help="Audit rounds, one canary client each (dpsgd: steps, one canary each)."
        ),
    ] = 200,
    confidence: Annotated[float, typer.Option(min=0.5, max=0.9999)] = 0.95,
    broken: Annotated[
        str,
        typer.Option(help="Positive control: none | half_noise | no_noise | no_clip (central)."),
    ] = "none",
) -> None:
    """Audit central or local DP (canary clients) or DP-SGD (gradient canaries): an
    empirical per-round or per-step ε lower bound."""
    from fedloom.privacy.audit import BROKEN, audit_config

    items = args or []
    path, overrides = (items[0], items[1:]) if items and "=" not in items[0] else (None, items)
    try:
        if broken not in BROKEN:
            raise ConfigError([f"--broken must be one of {', '.join(BROKEN)}, got {broken!r}"])
        config = load_config(path, overrides)
        result = audit_config(config, canaries=canaries, confidence=confidence, broken=broken)  # type: ignore[arg-type]
    except FedloomError as error:
        raise fail(error) from None
    table = Table(
        title=f"privacy audit ({result.broken}): per-{result.unit} claim at δ = {result.delta:.3g}"
    )
    table.add_column("quantity")
    table.add_column("value", justify="right")
    rows = (
        (f"ε lower bound ({result.confidence:.0%} confidence)", f"{result.epsilon_lower:.3f}"),
        (f"ε accountant (one {result.unit}, canary in)", f"{result.epsilon_claimed:.3f}"),
        ("canaries guessed right", f"{result.correct}/{result.canaries}"),
        ("accuracy lower bound", f"{result.accuracy_lower:.3f}"),
        ("highest accuracy the claim allows", f"{result.max_accuracy:.3f}"),
    )
    for row in rows:
        table.add_row(*row)
    console.print(table)
    whose = "client 0's DP-SGD, " if result.unit == "step" else ""
    console.print(
        f"whole run ({whose}{config.rounds} rounds): accountant ε = {result.run_epsilon:.3f} "
        f"at δ = {result.run_delta:g} (not audited directly: sampling and composition are "
        "the accountant's mathematics)"
    )
    if result.violation:
        console.print("[red]VIOLATION:[/] the mechanism leaks more than the accountant claims")
        raise typer.Exit(VIOLATION_EXIT)
    console.print("[green]consistent:[/] lower bound ≤ accountant's ε")


def register(app: typer.Typer) -> None:
    app.command(name="audit")(audit)
