"""``fedloom`` command line: run, resume."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from fedloom.config import FedConfig, load_config
from fedloom.core.errors import FedloomError
from fedloom.core.registry import import_plugins, plugin_key
from fedloom.export.cli import register as register_export
from fedloom.network.cli import register as register_network
from fedloom.privacy.cli import register as register_privacy
from fedloom.report.progress import round_progress
from fedloom.terminal import console, fail

if TYPE_CHECKING:  # torch-heavy: imported by the commands that run something
    from fedloom.experiment import Experiment, RunResult

app = typer.Typer(
    add_completion=False, no_args_is_help=False, help="Federated learning for PyTorch."
)
imported: list[str] = []
"""The ``--import`` modules of this command line; ``run`` records them in config.yaml."""


def _split(args: list[str]) -> tuple[str | None, list[str]]:
    """First argument is a YAML file unless it looks like an override."""
    if args and "=" not in args[0]:
        return args[0], args[1:]
    return None, args


def _fmt(value: Any, pattern: str = "{:.4f}") -> str:
    return "-" if value is None else pattern.format(value)


def _execute(experiment: Experiment, *, overwrite: bool = False) -> RunResult:
    rounds = experiment.config.rounds
    started = time.perf_counter()
    main = experiment.parts.task.main
    every = experiment.config.progress.every_s
    # a live bar on a terminal; in CI, nohup, a pipe: a plain line per round
    with round_progress(rounds, experiment.server.round, main, every, console) as show:
        result = experiment.run(on_round=show, overwrite=overwrite)
    return _finish(result, main, started)


def _finish(result: RunResult, main: str, started: float) -> RunResult:
    summary = result.summary
    if summary.get("stopped_early"):
        console.print(f"[yellow]stopped early:[/] {summary['stopped_early']}")
    console.print(
        f"final test {main} [bold]{_fmt(summary[f'final_test_{main}'])}[/] "
        f"(loss {_fmt(summary['final_test_loss'])}) after {summary['rounds']} rounds\n"
        f"run directory: {result.run_dir}\n"
        f"wall time: {time.perf_counter() - started:.1f} s"
    )
    return result


_SECTIONS = ", ".join(
    name
    for name, field in FedConfig.model_fields.items()
    if hasattr(field.annotation, "model_fields")
)


@app.command(
    help="Run a federation (with no arguments: digits over 10 clients, cnn, FedAvg). "
    "Keys are set as dotted.key=value after an optional CONFIG.yaml; `fedloom config "
    f"[SECTION]` lists them. Sections: {_SECTIONS}."
)
def run(
    args: Annotated[
        list[str] | None,
        typer.Argument(help="[CONFIG.yaml] [dotted.key=value ...]", show_default=False),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Clear a non-empty output_dir first.")
    ] = False,
) -> None:
    """Run a federation (with no arguments: digits over 10 clients, cnn, FedAvg)."""
    from fedloom.experiment import Experiment
    from fedloom.rundir import claim_run_dir, config_inputs
    from fedloom.simulation import distributed

    try:
        path, overrides = _split(args or [])
        config = recording_plugins(load_config(path, overrides), imported)
        ended = distributed.run_command(config, sys.argv[1:])  # launched K ranks, or a rank > 0
        if ended is not None:
            raise typer.Exit(ended)
        if config.output_dir and not overwrite:  # fail before loading any data
            claim_run_dir(Path(config.output_dir), config_inputs(config, path))
        experiment = Experiment(config)
        distributed.lead(experiment)  # rank 0 of several: start the others
        if path is not None:
            experiment.inputs.append(Path(path).absolute())
        _execute(experiment, overwrite=overwrite)
    except FedloomError as error:
        raise fail(error) from None


@app.command(name="resume")
def resume_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with a checkpoint.")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="e.g. rounds=40", show_default=False)
    ] = None,
) -> None:
    """Continue a run from its last checkpoint."""
    from fedloom.experiment import resume
    from fedloom.simulation import distributed

    try:
        ended = distributed.resume_command(run_dir, overrides or [], sys.argv[1:])
        if ended is not None:
            raise typer.Exit(ended)
        experiment = resume(run_dir, overrides or [])
        distributed.lead(experiment)
        console.print(f"resuming {run_dir} after round {experiment.server.round}")
        _execute(experiment)
    except FedloomError as error:
        raise fail(error) from None


@app.command()
def pretrain(
    args: Annotated[
        list[str] | None,
        typer.Argument(help="[CONFIG.yaml] [dotted.key=value ...]", show_default=False),
    ] = None,
    out: Annotated[Path, typer.Option(help="Where to write the safetensors checkpoint.")] = Path(
        "pretrained.safetensors"
    ),
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the train split.")] = 5,
) -> None:
    """Train a model centrally on a config's data (e.g. data.classes=[0,1,2,3,4]) and save it."""
    from fedloom.finetune.pretrain import pretrain as run_pretrain

    try:
        path, overrides = _split(args or [])
        result = run_pretrain(load_config(path, overrides), out, epochs)
    except FedloomError as error:
        raise fail(error) from None
    console.print(
        f"pretrained on {result.num_examples} examples: test accuracy "
        f"[bold]{result.test_accuracy:.4f}[/] (loss {result.test_loss:.4f})\n"
        f"checkpoint: {result.path}  (use model.checkpoint={result.path})"
    )


@app.command(name="config")
def config_cmd(
    section: Annotated[
        str | None, typer.Argument(help="a section (train, privacy, ...); all when left out")
    ] = None,
) -> None:
    """Every config key with its type, default and meaning."""
    from rich.table import Table
    from rich.text import Text

    from fedloom.confighelp import section_keys

    try:
        found = section_keys(section)
    except FedloomError as error:
        raise fail(error) from None
    table = Table("key", "type", "default", "meaning", box=None, pad_edge=False)
    for key in found:  # plain text: a doc's ``loggers=[csv]`` is not rich markup
        table.add_row(*(Text(v) for v in (key.name, key.type, key.default, key.doc)))
    Console().print(table)


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="run directories", show_default=False)],
    out: Annotated[Path, typer.Option(help="where compare.png and compare.md go")] = Path("."),
) -> None:
    """One figure and one markdown table for several runs, config differences in bold."""
    from fedloom.report.compare import compare as write
    from fedloom.report.runs import read_run

    try:
        image, text = write([read_run(r) for r in runs], out)
    except FedloomError as error:
        raise fail(error) from None
    console.print(f"wrote {image} and {text}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="a finished run directory")],
    out: Annotated[
        Path | None, typer.Option(help="the HTML file (default: RUN_DIR/report.html)")
    ] = None,
) -> None:
    """A single self-contained HTML page: config, summary, plots, partition."""
    from fedloom.report.html import write_report
    from fedloom.report.runs import read_run

    try:
        path = write_report(read_run(run_dir), out)
    except FedloomError as error:
        raise fail(error) from None
    console.print(f"wrote {path}")


register_network(app)  # server, client, deploy-local, certs (listed after the core commands)
register_privacy(app)  # audit
register_export(app)  # export, predict


@app.callback(invoke_without_command=True)
def _options(
    ctx: typer.Context,
    modules: Annotated[
        list[str] | None,
        typer.Option(
            "--import",
            help="A module or .py file to import first: the components it registers "
            "(@fedloom.register) can be named in the config. Repeatable; accepted by "
            "every command.",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", help="Print fedloom's version and exit.", is_eager=True)
    ] = False,
) -> None:
    """Federated learning for PyTorch. `fedloom config [SECTION]` lists every config key."""
    if version:
        from importlib.metadata import version as installed

        typer.echo(f"fedloom {installed('fedloom')}")
        raise typer.Exit()
    if modules:  # main() takes --import out of argv first (any position); kept for --help
        import_plugins(modules)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit()


def recording_plugins(config: FedConfig, modules: list[str]) -> FedConfig:
    """``config`` with the command line's ``--import`` modules added to ``plugins`` (files
    as absolute paths), so that config.yaml names them and ``fedloom resume`` imports
    them again."""
    recorded = [plugin_key(m) for m in modules]
    extra = [m for m in recorded if m not in config.plugins]
    return config.model_copy(update={"plugins": [*config.plugins, *extra]}) if extra else config


def take_imports(argv: list[str]) -> tuple[list[str], list[str]]:
    """``(modules, the other arguments)``: every ``--import M`` or ``--import=M`` is taken
    out wherever it stands, so each command accepts it."""
    modules: list[str] = []
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--import":
            modules.append(next(args, ""))
        elif arg.startswith("--import="):
            modules.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    return modules, rest


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    modules, rest = take_imports(sys.argv[1:])
    imported[:] = modules
    try:
        import_plugins(modules)
    except FedloomError as error:
        raise SystemExit(fail(error).exit_code) from None
    app(args=rest, prog_name="fedloom")


if __name__ == "__main__":
    main()
