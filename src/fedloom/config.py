"""The run configuration: one typed, frozen model per component, validated at the edge.

``load_config(path, overrides)`` merges a YAML file with ``dotted.key=value`` overrides and
reports every problem at once (unknown keys with the allowed ones, wrong types, values
out of range) as a single ``ConfigError``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedloom.client.config import TrainConfig
from fedloom.compression.config import CompressionConfig
from fedloom.core.errors import ConfigError
from fedloom.core.registry import import_plugins, registered
from fedloom.data.config import DataConfig
from fedloom.finetune.config import FinetuneConfig
from fedloom.models.config import ModelConfig
from fedloom.network.config import NetworkConfig
from fedloom.privacy.config import PrivacyConfig
from fedloom.robust.config import AttackConfig
from fedloom.server.config import StrategyConfig
from fedloom.simulation.config import DevicesConfig


class ClientsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    num: int = Field(10, ge=1)
    """Number of clients in the federation."""
    per_round: int = Field(10, ge=1)
    """Clients sampled each round."""


class FedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    plugins: list[str] = Field(default_factory=list)
    """Modules (``my_pkg.plugin`` or ``path/to/plugin.py``) imported before the rest of
    the config is checked: the components they register can then be named in it."""
    seed: int = 0
    rounds: int = Field(20, ge=1)
    output_dir: str | None = None
    """The run directory; by default ``runs/<data>-<model>-<timestamp>``."""
    eval_every: int = Field(1, ge=1)
    loggers: list[str] = Field(default_factory=list)
    """Registered metrics loggers fed every round besides ``metrics.jsonl`` (``csv``)."""
    data: DataConfig = DataConfig()
    clients: ClientsConfig = ClientsConfig()
    train: TrainConfig = TrainConfig()
    model: ModelConfig = ModelConfig()
    strategy: StrategyConfig = StrategyConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    compression: CompressionConfig = CompressionConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    devices: DevicesConfig = DevicesConfig()
    attack: AttackConfig = AttackConfig()
    network: NetworkConfig = NetworkConfig()

    @field_validator("loggers")
    @classmethod
    def _known_loggers(cls, names: list[str]) -> list[str]:
        return [registered("logger", name) for name in names]

    @model_validator(mode="after")
    def _per_round_fits(self) -> FedConfig:
        if self.clients.per_round > self.clients.num:
            raise ValueError(
                f"clients.per_round ({self.clients.per_round}) exceeds clients.num "
                f"({self.clients.num})"
            )
        return self

    def compatibility_problems(self) -> list[str]:
        """Pairs of features that cannot run together (``fedloom.compat``)."""
        from fedloom.compat import problems

        return problems(self)


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError([f"{key}: {part!r} is a value, not a section"])
        node = child
    node[leaf] = value


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["train.lr=0.1", "rounds=5"]`` -> nested dict, values parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"override {item!r} is not of the form dotted.key=value")
            continue
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    if problems:
        raise ConfigError(problems)
    return tree


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def nest(values: Mapping[str, Any]) -> dict[str, Any]:
    """Keys may be dotted (``{"clients.num": 20}``) or nested; returns the nested form."""
    tree: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            value = nest(value)
        branch: dict[str, Any] = {}
        _set_dotted(branch, key, value)
        tree = _merge(tree, branch)
    return tree


def _model_at(path: Sequence[str | int]) -> type[BaseModel] | None:
    model: type[BaseModel] = FedConfig
    for part in path:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _describe(error: Mapping[str, Any]) -> str:
    loc = [str(p) for p in error["loc"]]
    key = ".".join(loc) or "<config>"
    if error["type"] == "extra_forbidden":
        section = _model_at(loc[:-1])
        allowed = sorted(section.model_fields) if section else []
        close = difflib.get_close_matches(loc[-1], allowed, n=1)
        hint = f" (did you mean {'.'.join([*loc[:-1], close[0]])!r}?)" if close else ""
        return f"{key}: unknown key{hint}; allowed here: {', '.join(allowed)}"
    message = str(error["msg"]).removeprefix("Value error, ")
    given = error.get("input")
    if isinstance(given, Mapping) or str(given) in message:
        return f"{key}: {message}"  # a section, or a value the message already quotes
    return f"{key}: {message} (got {given!r})"


def build_config(tree: Mapping[str, Any]) -> FedConfig:
    """Import ``tree``'s plugins, then validate it: every key and value, then every pair
    of features that must not meet; all problems in one ``ConfigError``."""
    plugins = tree.get("plugins") or []
    if isinstance(plugins, list) and all(isinstance(p, str) for p in plugins):
        import_plugins(plugins)  # anything else is reported by the validation below
    try:
        config = FedConfig.model_validate(dict(tree))
    except ValidationError as error:
        raise ConfigError([_describe(e) for e in error.errors()]) from None
    problems = config.compatibility_problems()
    if problems:
        raise ConfigError(problems)
    return config


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    base: Mapping[str, Any] | None = None,
) -> FedConfig:
    """A validated config from an optional YAML file, then ``base``, then the overrides."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError([f"config file {path} does not exist"])
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError([f"config file {path} must hold a mapping of keys to values"])
        tree = loaded
    if base:
        tree = _merge(tree, base)
    return build_config(_merge(tree, parse_overrides(overrides)))


def to_yaml(config: FedConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
