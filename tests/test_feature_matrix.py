"""Every pair of features either runs together or is refused at config time naming both.

The features come from the registries and the config's own choices, so a new strategy,
aggregator, codec or attack (built in or from a plugin) is covered without editing this
file: privacy modes, uplink codecs and pruning, fine-tune modes, strategies, aggregators,
attacks, client weighting, simulated devices, federated evaluation, metrics loggers and
vectorized clients.

1. Every pair of values of two different dimensions is validated at config time: it is
   accepted, or refused with a ``ConfigError`` that names both (a key or its value).
2. A covering set of runs (each one a value per dimension, greedily chosen so that every
   accepted pair appears in at least one run) trains two rounds of logistic regression on
   digits. Each must end with finite weights, a metrics line per round with the right
   bytes and privacy fields, and only warnings listed in ``EXPLAINED``.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from fedloom.config import load_config
from fedloom.core.errors import ConfigError
from fedloom.core.registry import REGISTRY
from fedloom.experiment import Experiment
from fedloom.finetune.config import FinetuneConfig
from fedloom.network.config import NetworkConfig
from fedloom.privacy.config import PrivacyConfig

BASE = [
    "model.name=logreg",
    "clients.num=6",
    "clients.per_round=6",
    "rounds=2",
    "train.local_epochs=1",
    "train.batch_size=32",
    "seed=3",
]


@dataclass(frozen=True)
class Value:
    dimension: str
    label: str
    overrides: tuple[str, ...]

    def named_in(self, message: str) -> bool:
        key, value = self.overrides[0].split("=", 1)
        return key in message or value in message


def _choices(model: type, field: str) -> list[str]:
    return list(typing.get_args(model.model_fields[field].annotation))


def _codec(name: str) -> str:
    caps = REGISTRY.component("codec", name).capabilities
    return f"{name}:0.1" if "spec" in caps and name in ("topk", "randk") else name


FINETUNE_EXTRA = {"names": ("finetune.names=['1.*']",), "importance": ("finetune.fraction=0.5",)}
PRIVACY_EXTRA = ("privacy.noise_multiplier=1.0",)
MODE_EXTRA = {"distributed": ("secure.mode=secagg",)}  # its noise needs the secure sum


def dimensions() -> dict[str, list[Value]]:
    """Each dimension's non-default values (the default is what a run leaves unset)."""
    dims: dict[str, list[Value]] = {
        "privacy": [
            Value("privacy", m, (f"privacy.mode={m}", *PRIVACY_EXTRA, *MODE_EXTRA.get(m, ())))
            for m in _choices(PrivacyConfig, "mode")
            if m != "none"
        ],
        "codec": [
            Value("codec", n, (f"compression.up={_codec(n)}",))
            for n in REGISTRY.names("codec")
            if n not in ("none", "f32")
        ],
        "prune": [Value("prune", "prune", ("compression.prune=0.5",))],
        "finetune": [
            Value("finetune", m, (f"finetune.mode={m}", *FINETUNE_EXTRA.get(m, ())))
            for m in _choices(FinetuneConfig, "mode")
            if m != "full"
        ],
        "strategy": [
            Value("strategy", n, (f"strategy.name={n}",))
            for n in REGISTRY.names("strategy")
            if n != "fedavg"
        ],
        "aggregator": [
            Value("aggregator", n, (f"strategy.aggregator={n}",))
            for n in REGISTRY.names("aggregator")
            if n != "mean"
        ],
        "attack": [
            Value("attack", n, (f"attack.kind={n}", "attack.fraction=0.2"))
            for n in REGISTRY.names("attack")
        ],
        "weights": [
            Value("weights", w, (f"network.client_weights={w}",))
            for w in _choices(NetworkConfig, "client_weights")
            if w != "server"
        ],
        "devices": [Value("devices", "devices", ("devices.enabled=true", "devices.dropout=0.2"))],
        "client_eval": [Value("client_eval", "client_eval", ("eval.client_fraction=0.5",))],
        "pool": [Value("pool", "pool", ("clients.lazy=on",))],
        "secure": [
            Value("secure", "secagg", ("secure.mode=secagg",)),
            Value("secure", "ckks", ("secure.mode=ckks",)),
        ],
        "vectorize": [Value("vectorize", "vectorized", ("simulation.vectorize=on",))],
        "loggers": [
            Value("loggers", name, (f"loggers=[{name}]",))
            for name in REGISTRY.names("logger")
            if not REGISTRY.component("logger", name).meta.get("requires")
        ]
        # the dev install has TensorBoard: its histograms meet DP, vectorizing, pools ...
        + [Value("loggers", "tensorboard", ("logging.tensorboard=true",))],
    }
    return dims


DIMS = dimensions()
VALUES = [v for values in DIMS.values() for v in values]
PAIRS = [(a, b) for a, b in itertools.combinations(VALUES, 2) if a.dimension != b.dimension]


def _check(values: typing.Iterable[Value]) -> ConfigError | None:
    try:
        load_config(None, [*BASE, *(o for v in values for o in v.overrides)])
    except ConfigError as refused:
        return refused
    return None


def _allowed_pairs() -> set[tuple[Value, Value]]:
    return {(a, b) for a, b in PAIRS if _check([a, b]) is None}


def covering_rows(allowed: set[tuple[Value, Value]]) -> list[list[Value]]:
    """Rows (at most one value per dimension) that together contain every allowed pair;
    each row is itself accepted by the config. Greedy, deterministic."""
    uncovered = set(allowed)
    rows: list[list[Value]] = []
    while uncovered:
        a, b = min(uncovered, key=lambda p: (VALUES.index(p[0]), VALUES.index(p[1])))
        row = [a, b]
        for dim, values in DIMS.items():
            if dim in (a.dimension, b.dimension):
                continue
            best, gain = None, 0
            for v in values:
                fits = all((w, v) in allowed or (v, w) in allowed for w in row)
                covers = sum((w, v) in uncovered or (v, w) in uncovered for w in row)
                if fits and covers > gain and _check([*row, v]) is None:
                    best, gain = v, covers
            if best is not None:
                row.append(best)
        assert _check(row) is None, [v.label for v in row]
        uncovered -= {(x, y) for x in row for y in row if (x, y) in uncovered}
        rows.append(row)
    return rows


def test_every_pair_is_accepted_or_refused_naming_both_at_config_time() -> None:
    refused = []
    for a, b in PAIRS:
        error = _check([a, b])
        if error is None:
            continue
        message = str(error)
        assert a.named_in(message) and b.named_in(message), (a.label, b.label, message)
        refused.append((a.label, b.label))
    # the known refusals, from the capabilities the strategies declare
    assert ("central", "scaffold") in refused and ("dpsgd", "fedprox") in refused
    assert ("central", "median") in refused and ("fednova", "median") in refused
    assert ("prune", "lora") in refused and ("fednova", "claimed") in refused
    assert ("central", "fedadam") not in refused and ("int8", "scaffold") not in refused
    assert len(PAIRS) > 400


EXPLAINED = {
    # the seeded research mode of any DP run says it is for research only
    r"privacy.secure_rng=false": "seeded DP run",
    # DP weighs updates uniformly (a claimed count would move the noise's sensitivity)
    r"weight.*uniform|uniformly": "DP ignores claimed weights",
    # a robust rule with few updates in a round narrows its tolerance
    r"Krum: only \d+ updates arrived": "devices dropped clients",
    # secure aggregation: devices dropped more clients than its threshold tolerates
    r"secure aggregation round \d+ aborted": "devices dropped clients (secagg)",
    r"round \d+: 0 valid update\(s\), 1 needed": "that aborted secure round",
    # Opacus: secure mode off and similar notices under DP-SGD
    r"[Ss]ecure RNG|secure_mode": "Opacus' seeded-mode notice",
}


def _unexplained(records: list[logging.LogRecord]) -> list[str]:
    warnings = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    return [w for w in warnings if not any(re.search(p, w) for p in EXPLAINED)]


ROWS = covering_rows(_allowed_pairs())


@pytest.mark.slow
@pytest.mark.parametrize(
    "row", ROWS, ids=["+".join(v.label for v in row) or "default" for row in ROWS]
)
def test_covering_runs_train_with_the_right_fields(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, row: list[Value]
) -> None:
    overrides = [*BASE, *(o for v in row for o in v.overrides), f"output_dir={tmp_path}"]
    with caplog.at_level(logging.WARNING):
        experiment = Experiment(load_config(None, overrides))
        result = experiment.run()
    assert [m["round"] for m in result.metrics] == [1, 2]
    for name, t in result.model.state_dict().items():
        if t.is_floating_point():
            assert bool(torch.isfinite(t).all()), f"{name} is not finite"
    labels = {v.dimension: v.label for v in row}
    raw = sum(math.prod(shape) * 4 for shape in experiment.server.spec.shapes.values())
    for m in result.metrics:
        assert m["bytes_down"] > 0
        if m["num_clients"] > m["num_failed"]:
            per_client = m["bytes_up"] / (m["num_clients"] - m["num_failed"])
            assert per_client > 0
            # a compressing codec shrinks an update big enough to outweigh its header
            if labels.get("codec") in ("int8", "int4", "topk", "randk") and raw >= 2000:
                assert per_client < 0.6 * raw, (per_client, raw)
        if "privacy" in labels:
            released = m["epsilon"] > 0 or m.get("secure_aborted")  # aborted: nothing out
            assert released and m["delta"] > 0 and m["accountant"] in ("prv", "rdp", "ddg-kls21")
        else:
            assert m.get("epsilon") is None
    assert _unexplained(caplog.records) == []


def test_the_covering_runs_cover_every_accepted_pair() -> None:
    allowed = _allowed_pairs()
    covered = {(a, b) for row in ROWS for a in row for b in row if (a, b) in allowed}
    assert covered == allowed
    assert len(ROWS) < len(allowed) / 4  # far fewer runs than pairs
