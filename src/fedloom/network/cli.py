"""``fedloom server | client | deploy-local | certs | tokens``: the networked federation's
commands.

Registered on the main typer app by ``register``. The gRPC modules are imported inside
the commands, so ``fedloom run`` works without the optional ``network`` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fedloom.core.errors import ConfigError, FedloomError
from fedloom.terminal import console, fail

Args = Annotated[
    list[str] | None,
    typer.Argument(help="[CONFIG.yaml] [dotted.key=value ...]", show_default=False),
]


def _split(args: list[str] | None) -> tuple[str | None, list[str]]:
    args = args or []
    if args and "=" not in args[0]:
        return args[0], args[1:]
    return None, args


def _show_round(m: dict[str, Any]) -> None:
    main = next((k for k in m if k.startswith("test_") and k != "test_loss"), "test_loss")
    value = "-" if m[main] is None else f"{m[main]:.4f}"
    console.print(
        f"round {m['round']}: {main.removeprefix('test_')} {value}  clients {m['num_clients']}  "
        f"failed {m.get('num_failed', 0)}  rejected {m.get('num_rejected', 0)}  "
        f"{m['wall_s']:.2f} s"
    )


def server(args: Args = None) -> None:
    """Serve a federation over gRPC (resumes if output_dir holds a checkpoint).

    SIGINT or SIGTERM abandons the open round, tells the clients to retry and exits with
    128 + the signal's number; the same command then resumes from the last checkpoint.
    """
    from fedloom.network.memory import tune_malloc
    from fedloom.network.server import serve, server_experiment
    from fedloom.network.stopping import Interrupted, stop_on_signals

    tune_malloc()
    experiment = None
    try:
        with stop_on_signals():
            path, overrides = _split(args)
            experiment = server_experiment(path, overrides)
            result = serve(experiment, on_round=_show_round)
        main = f"test_{experiment.parts.task.main}"
        final = result.summary[f"final_{main}"]
        console.print(f"final {main.replace('_', ' ')} {final}\nrun directory: {result.run_dir}")
    except Interrupted as stop:
        where = again = ""
        if experiment is not None:
            where = f" after round {experiment.server.round}"
            if "output_dir=" not in " ".join(args or []):  # an auto-named run directory
                again = f" with output_dir={experiment.run_dir}"
        console.print(
            f"[red]error:[/] {stop}{where}; clients were told to retry; "
            f"run the same command{again} to resume",
            soft_wrap=True,
        )
        raise typer.Exit(stop.exit_code) from None
    except FedloomError as error:
        raise fail(error) from None


def client(
    server: Annotated[str, typer.Option("--server", help="HOST:PORT of the server")],
    token: Annotated[str, typer.Option(envvar="FEDLOOM_TOKEN", help="this client's secret token")],
    partition: Annotated[
        int | None, typer.Option("--partition", "--id", help="which client this is (its id)")
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(help="site.yaml: train on these local files instead of partition ID"),
    ] = None,
    args: Args = None,
) -> None:
    """Join a federation as client ID; exits when the server is done."""
    from fedloom.network.client import client_main

    try:
        if partition is None:
            raise ConfigError(["fedloom client needs --id (or --partition): which client it is"])
        path, overrides = _split(args)
        rounds = client_main(path, overrides, server, partition, token, site=data)
        console.print(f"client {partition}: answered {rounds} round(s); the server is done")
    except FedloomError as error:
        raise fail(error) from None


def deploy_local(
    n: Annotated[int, typer.Argument(help="number of client processes", min=1)],
    args: Args = None,
    tls: Annotated[bool, typer.Option(help="use TLS with fresh test certificates")] = False,
) -> None:
    """Start a server and N clients on this machine and run the federation."""
    from fedloom.network.deploy import deploy_local as deploy

    try:
        path, overrides = _split(args)
        code, run_dir = deploy(n, path, overrides, tls=tls)
        console.print(f"server exited with code {code}; run directory: {run_dir}")
        if code:
            raise typer.Exit(code)
    except FedloomError as error:
        raise fail(error) from None


def certs(
    directory: Annotated[str, typer.Argument(help="where to write the PEM files")],
    host: Annotated[
        list[str] | None, typer.Option(help="server host names/IPs (repeatable)")
    ] = None,
) -> None:
    """Create a test CA, a server certificate and a client certificate."""
    from fedloom.network.certs import make_certs

    files = make_certs(directory, host or ["localhost", "127.0.0.1"])
    for name, path in vars(files).items():
        console.print(f"{name:12} {path}")


def tokens(
    file: Annotated[str, typer.Argument(help="the tokens file to write (mode 0600)")],
    n: Annotated[
        int | None, typer.Argument(help="clients 0..N-1", min=1, show_default=False)
    ] = None,
    ids: Annotated[str | None, typer.Option("--ids", help="named clients instead: a,b,c")] = None,
    force: Annotated[bool, typer.Option(help="overwrite an existing FILE")] = False,
) -> None:
    """Write one fresh secret token per client to FILE, readable by its owner only."""
    from fedloom.network.deploy import token_ids, write_tokens

    try:
        clients = token_ids(n, ids)
        write_tokens(Path(file), clients, overwrite=force)
    except FedloomError as error:
        raise fail(error) from None
    console.print(f"wrote {len(clients)} token(s) to {file} (mode 0600)")


def register(app: typer.Typer) -> None:
    app.command(name="server")(server)
    app.command(name="client")(client)
    app.command(name="deploy-local")(deploy_local)
    app.command(name="certs")(certs)
    app.command(name="tokens")(tokens)
