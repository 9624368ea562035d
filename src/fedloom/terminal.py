"""What every command prints to the terminal: one console on stderr, one error format."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

from fedloom.core.errors import ConfigError, FedloomError

console = Console(stderr=True)


def fail(error: FedloomError) -> typer.Exit:
    """Print ``error`` as it is (``fedloom[privacy]`` is text, not markup); exit 2 for a
    configuration error, 1 otherwise."""
    console.print(f"[red]error:[/] {escape(str(error))}", soft_wrap=True)
    return typer.Exit(2 if isinstance(error, ConfigError) else 1)
