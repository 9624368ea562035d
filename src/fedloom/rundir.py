"""The run directory: when a run may write into one, and what a resume may change.

A fresh run writes only into an empty ``output_dir`` (or one that holds nothing but the
inputs its own config names, such as a tokens file or certificates); ``overwrite`` clears
the rest first. A resume compares the saved ``config.yaml`` with the new effective
config and accepts only the keys that cannot change the maths of the rounds already run;
it records each accepted change in ``resumes.jsonl``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedloom.config import FedConfig, load_config, to_yaml
from fedloom.core.errors import ConfigError
from fedloom.core.files import write_atomic

CONFIG_FILE = "config.yaml"
RESUMES_FILE = "resumes.jsonl"

#: Keys ``fedloom resume`` accepts: they change when the run stops or what it logs, never
#: an update. ``rounds`` is refused when ``privacy.target_epsilon`` calibrated the noise
#: to the round count.
RESUMABLE: frozenset[str] = frozenset(
    # how many ranks share the rounds does not change the result (fedloom.simulation.distributed)
    {"rounds", "eval_every", "privacy.max_epsilon", "simulation.workers", "simulation.timeout_s"}
)
#: ``fedloom server`` also accepts the network settings that say how clients are reached
#: and waited for (transport, addresses, deadlines, tokens, TLS files, timeouts), never
#: those that weigh or admit updates (``min_clients``, ``client_weights``, ...).
NETWORK_RESUMABLE: frozenset[str] = frozenset(
    f"network.{key}"
    for key in (
        "mode",
        "address",
        "port_file",
        "round_deadline_s",
        "wait_for_clients",
        "startup_timeout_s",
        "resume_wait_s",
        "max_message_bytes",
        "min_upload_rate",
        "upload_grace_s",
        "max_calls_per_client",
        "max_calls_per_host",
        "chunk_bytes",
        "max_inflight",
        "poll_s",
        "keepalive_s",
        "keepalive_timeout_s",
        "linger_s",
        "tokens_file",
        "tls_cert",
        "tls_key",
        "tls_ca",
        "mutual_tls",
        "client_cert",
        "client_key",
        "tls_server_name",
        "reconnect_max_s",
        "give_up_s",
    )
)
SERVER_RESUMABLE: frozenset[str] = RESUMABLE | NETWORK_RESUMABLE
_NOT_COMPARED = frozenset({"output_dir"})  # a run directory may be moved


def _absolute(path: str | Path) -> Path:
    """The path with links resolved, so an input reached through a link is still one."""
    return Path(path).expanduser().resolve()


def config_inputs(config: FedConfig, *extra: str | Path | None) -> list[Path]:
    """The files and folders ``config`` reads (plus ``extra``, e.g. the config file)."""
    net = config.network
    named = [
        config.model.checkpoint,
        config.data.dir,
        net.tokens_file,
        net.port_file,
        net.tls_cert,
        net.tls_key,
        net.tls_ca,
        net.client_cert,
        net.client_key,
        getattr(net, "client_sizes_file", None),
        *extra,
    ]
    return [_absolute(p) for p in named if p]


def foreign_entries(run_dir: Path, inputs: Iterable[Path] = ()) -> list[Path]:
    """The entries of ``run_dir`` that are neither an input nor a folder holding one."""
    if not run_dir.is_dir():
        return []
    wanted = [_absolute(p) for p in inputs]
    foreign = []
    for entry in sorted(run_dir.iterdir()):
        here = _absolute(entry)
        if not any(p == here or here in p.parents for p in wanted):
            foreign.append(entry)
    return foreign


def _check_clearable(run_dir: Path) -> None:
    """Refuse to clear the filesystem root, the home or working folder, or an ancestor."""
    target = run_dir.resolve()
    for name, place in (("the current directory", Path.cwd()), ("your home", Path.home())):
        place = place.resolve()
        if target == place or target in place.parents:
            raise ConfigError([f"refusing to clear output_dir {run_dir}: it is or holds {name}"])


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink()


def check_inputs_apart(run_dir: Path, inputs: Iterable[Path]) -> None:
    """Refuse a run directory that is (or lies inside) one of the run's inputs, e.g.
    ``output_dir`` equal to ``data.dir``, or whose ``config.yaml`` is the config file given:
    the run would overwrite it, and a resume would compare that file with itself."""
    here = _absolute(run_dir)
    record = here / CONFIG_FILE
    for path in (_absolute(p) for p in inputs):
        if path == here or path in here.parents:
            raise ConfigError([f"output_dir {run_dir} is inside the run's input {path}"])
        if path == record:
            raise ConfigError(
                [
                    f"the config file {path} is the run directory's own record; pass the "
                    "original config file (or use `fedloom resume`)"
                ]
            )


def claim_run_dir(run_dir: Path, inputs: Iterable[Path] = (), *, overwrite: bool = False) -> None:
    """Make sure a fresh run may write into ``run_dir``; with ``overwrite``, clear it first.

    Only the entries that are not ``inputs`` are in the way, and only those are removed.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError([f"output_dir {run_dir} exists and is not a directory"])
    inputs = list(inputs)
    check_inputs_apart(run_dir, inputs)
    foreign = foreign_entries(run_dir, inputs)
    if not foreign:
        return
    if not overwrite:
        names = ", ".join(e.name for e in foreign[:4]) + (", ..." if len(foreign) > 4 else "")
        raise ConfigError(
            [
                f"output_dir {run_dir} is not empty (it holds {names}); choose another "
                "output_dir, continue it with `fedloom resume`, or pass --overwrite "
                "(overwrite=True in Python) to clear it"
            ]
        )
    _check_clearable(run_dir)
    for entry in foreign:
        _remove(entry)


# -- resume ------------------------------------------------------------------------------


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_changes(old: FedConfig, new: FedConfig) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old, new)}`` for every resolved value that differs."""
    before = _flatten(old.model_dump(mode="json"))
    after = _flatten(new.model_dump(mode="json"))
    return {
        key: (before.get(key), after.get(key))
        for key in sorted(before.keys() | after.keys())
        if key not in _NOT_COMPARED and before.get(key) != after.get(key)
    }


def _calibrated_to_rounds(config: FedConfig) -> bool:
    p = config.privacy
    planned = p.target_epsilon is not None or p.schedule != "constant" or bool(p.tiers)
    return p.mode != "none" and planned


def refused_changes(
    changes: Mapping[str, tuple[Any, Any]], new: FedConfig, allowed: frozenset[str]
) -> list[str]:
    """One line per change a resume may not make, saying why."""
    refused = []
    for key, (old, value) in changes.items():
        if key == "rounds" and "rounds" in allowed and _calibrated_to_rounds(new):
            refused.append(
                f"rounds: {old} -> {value}: privacy.target_epsilon calibrated the noise "
                f"to {old} rounds; start a new run instead"
            )
        elif key not in allowed:
            refused.append(f"{key}: {old!r} -> {value!r}")
    return refused


def saved_config(run_dir: Path) -> FedConfig:
    """The resolved config a run saved in ``run_dir``."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise ConfigError([f"{run_dir} is not a run directory (no {CONFIG_FILE})"])
    return load_config(path)


def allowed_changes(
    run_dir: Path, new: FedConfig, allowed: frozenset[str] = RESUMABLE
) -> dict[str, tuple[Any, Any]]:
    """The changes from ``run_dir``'s saved config to ``new``; a ``ConfigError`` lists any
    change that a resume may not make."""
    changes = config_changes(saved_config(run_dir), new)
    refused = refused_changes(changes, new, allowed)
    if refused:
        keys = ", ".join(sorted(k for k in allowed if not k.startswith("network.")))
        extra = " and the network connection settings" if allowed & NETWORK_RESUMABLE else ""
        raise ConfigError(
            [f"cannot resume {run_dir} with {r}" for r in refused]
            + [f"a resume may change only {keys}{extra}"]
        )
    return changes


def record_resume(
    run_dir: Path, after_round: int, changes: Mapping[str, tuple[Any, Any]], config: FedConfig
) -> None:
    """Append the resume to ``resumes.jsonl`` and save ``config`` as the run's config."""
    line = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "after_round": after_round,
        "changes": {key: [old, new] for key, (old, new) in changes.items()},
    }
    with open(run_dir / RESUMES_FILE, "a") as f:
        f.write(json.dumps(line) + "\n")
    write_atomic(run_dir / CONFIG_FILE, to_yaml(config).encode())
