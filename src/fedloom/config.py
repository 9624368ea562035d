"""The run configuration: one typed, frozen model per component, validated at the edge.

``load_config(path, overrides)`` merges a YAML file with ``dotted.key=value`` overrides and
reports every problem at once (unknown keys with the allowed ones, wrong types, values
out of range) as a single ``ConfigError``.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedloom.client.config import (
    ComputeConfig,
    EvalConfig,
    ProgressConfig,
    TaskConfig,
    TrainConfig,
)
from fedloom.compression.config import CompressionConfig
from fedloom.core.errors import ConfigError
from fedloom.core.registry import (
    IMPORTED,
    REGISTRY,
    import_plugins,
    is_plugin_file,
    plugin_key,
    registered,
)
from fedloom.data.config import DataConfig
from fedloom.distill.config import DistillConfig, ModelShare, check_shares
from fedloom.finetune.config import FinetuneConfig
from fedloom.models.config import ModelConfig
from fedloom.network.config import NetworkConfig
from fedloom.privacy.config import PrivacyConfig
from fedloom.report.config import LoggingConfig
from fedloom.robust.config import AttackConfig
from fedloom.secure.config import SecureConfig
from fedloom.server.config import StrategyConfig
from fedloom.simulation.config import DevicesConfig
from fedloom.simulation.engine import SimulationConfig, Switch


class ClientsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    num: int = Field(10, ge=1)
    """Number of clients in the federation."""
    per_round: int = Field(10, ge=1)
    """Clients sampled each round; default min(10, num), or from ``fraction``."""
    fraction: float | None = Field(None, gt=0, le=1)
    """Share of the clients sampled each round, rounded up (at least 1); give this or
    ``per_round``, not both."""
    lazy: Switch = "auto"
    """Build a simulated client (its data, its state) only when a round samples it: ``on``,
    ``off`` (all up front), or ``auto`` (on above 1000 clients or with an on-demand
    dataset such as synthetic_lazy)."""
    models: list[ModelShare] = Field(default_factory=list)
    """Architectures of a heterogeneous federation: ``{model: NAME, fraction: F}`` or
    ``{model: NAME, clients: [ids]}`` entries; empty: every client has ``model.name``."""

    @model_validator(mode="after")
    def _models_cover(self) -> ClientsConfig:
        if self.models:
            check_shares(self.models, self.num)
        return self

    @model_validator(mode="before")
    @classmethod
    def _resolve_per_round(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        num = data.get("num", cls.model_fields["num"].default)
        fraction = data.get("fraction")
        per_round = data.get("per_round")
        if not isinstance(num, int) or isinstance(num, bool):
            return data  # the field check reports it
        if isinstance(fraction, int | float) and not isinstance(fraction, bool):
            computed = max(1, math.ceil(fraction * num))
            if per_round is not None and per_round != computed:
                raise ValueError(
                    "give exactly one of clients.fraction and clients.per_round "
                    f"(fraction {fraction} of {num} is {computed}, per_round is {per_round})"
                )
            return {**data, "per_round": computed}
        if per_round is None:
            return {**data, "per_round": min(10, num)}
        return data


class FedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    plugins: list[str] = Field(default_factory=list)
    """Modules (``my_pkg.plugin`` or ``path/to/plugin.py``) imported before the rest of
    the config is checked: the components they register can then be named in it."""
    seed: int = 0
    """Seeds every random draw (sampling, shuffling, initialisation, seeded DP noise)."""
    rounds: int = Field(20, ge=1)
    """Federated rounds."""
    output_dir: str | None = None
    """The run directory; by default ``runs/<data>-<model>-<timestamp>``."""
    eval_every: int = Field(1, ge=1)
    """Evaluate the global model every k rounds (and always after the last)."""
    loggers: list[str] = Field(default_factory=list)
    """Registered metrics loggers fed every round besides ``metrics.jsonl`` (``csv``, a
    plugin's); ``logging.*`` switches add the built-in tracking backends."""
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    clients: ClientsConfig = Field(default_factory=ClientsConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    progress: ProgressConfig = Field(default_factory=ProgressConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    compression: CompressionConfig = Field(default_factory=CompressionConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    devices: DevicesConfig = Field(default_factory=DevicesConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    secure: SecureConfig = Field(default_factory=SecureConfig)

    @field_validator("loggers")
    @classmethod
    def _known_loggers(cls, names: list[str]) -> list[str]:
        for name in names:
            registered("logger", name)
            meta = REGISTRY.component("logger", name).meta
            needed = meta.get("requires")
            if needed and importlib.util.find_spec(needed) is None:
                raise ValueError(
                    f"{name} needs {needed}, which is not installed: "
                    f"pip install 'fedloom[{meta.get('extra', needed)}]'"
                )
        return names

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


def parse_yaml(text: str, source: str, *, lines: bool = True) -> Any:
    """YAML as Python values; a syntax error is one line naming ``source`` (and the line)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None and lines else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError([f"{source}{where}: YAML syntax error: {problem}"]) from None


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["train.lr=0.1", "rounds=5"]`` -> nested dict, values parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"override {item!r} is not of the form dotted.key=value")
            continue
        _set_dotted(
            tree,
            key.strip(),
            parse_yaml(raw, f"override {item!r}", lines=False) if raw.strip() else None,
        )
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


def build_config(tree: Mapping[str, Any], *, import_code: bool = True) -> FedConfig:
    """Import ``tree``'s plugins, then validate it: every key and value, then every pair
    of features that must not meet; all problems in one ``ConfigError``. With
    ``import_code=False`` (a client reading a config it may have been sent) the plugins
    must have been imported already, by the process's own command line."""
    plugins = tree.get("plugins") or []
    if isinstance(plugins, list) and all(isinstance(p, str) for p in plugins):
        if import_code:
            import_plugins(plugins)  # anything else is reported by the validation below
        else:
            foreign = [p for p in plugins if plugin_key(p) not in IMPORTED]
            if foreign:
                raise ConfigError(
                    [
                        f"plugins: the config asks to import {foreign}; a client runs code "
                        "only from its own command line: add --import for each"
                    ]
                )
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
    *,
    import_code: bool = True,
) -> FedConfig:
    """A validated config from an optional YAML file, then ``base``, then the overrides.
    A relative ``.py`` plugin in the file is found beside the file."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError([f"config file {path} does not exist"])
        loaded = parse_yaml(path.read_text(), str(path)) or {}
        if not isinstance(loaded, dict):
            raise ConfigError([f"config file {path} must hold a mapping of keys to values"])
        tree = _plugins_beside(loaded, path.parent)
    if base:
        tree = _merge(tree, base)
    return build_config(_merge(tree, parse_overrides(overrides)), import_code=import_code)


def _plugins_beside(tree: dict[str, Any], folder: Path) -> dict[str, Any]:
    plugins = tree.get("plugins")
    if not isinstance(plugins, list):
        return tree
    beside = [
        str(folder / p)
        if isinstance(p, str)
        and is_plugin_file(p)
        and not Path(p).is_absolute()
        and (folder / p).is_file()
        else p
        for p in plugins
    ]
    return {**tree, "plugins": beside}


def to_yaml(config: FedConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
