"""Every pair of features either runs together or is refused at config time naming both.

Each feature is a set of config overrides; each pair of features that set different keys
runs two rounds of a small federation. A pair that runs must end with a finite model and
a metrics line per round; a pair that cannot work must be a ``ConfigError`` whose message
names both features (a key or its value), never another exception or a silent NaN model.
A new feature joins ``FEATURES``.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from fedloom.config import load_config
from fedloom.core.errors import ConfigError
from fedloom.experiment import Experiment

BASE = [
    "model.name=mlp_2nn",
    "clients.num=6",
    "clients.per_round=6",
    "rounds=2",
    "train.local_epochs=1",
    "train.batch_size=32",
    "seed=3",
]
FEATURES: dict[str, list[str]] = {
    "central": ["privacy.mode=central", "privacy.noise_multiplier=1.0"],
    "local": ["privacy.mode=local", "privacy.noise_multiplier=1.0"],
    "dpsgd": ["privacy.mode=dpsgd", "privacy.noise_multiplier=1.0"],
    "int8": ["compression.up=int8", "compression.down=int8"],
    "topk": ["compression.up=topk:0.1"],
    "prune": ["compression.prune=0.5"],
    "fedprox": ["strategy.name=fedprox"],
    "scaffold": ["strategy.name=scaffold"],
    "fednova": ["strategy.name=fednova"],
    "fedadam": ["strategy.name=fedadam"],
    "median": ["strategy.aggregator=median"],
    "norm_bound": ["strategy.aggregator=norm_bound"],
    "claimed": ["network.client_weights=claimed"],
    "uniform": ["network.client_weights=uniform"],
    "devices": ["devices.enabled=true", "devices.dropout=0.2"],
    "last_k": ["finetune.mode=last_k"],
    "lora": ["finetune.mode=lora", "finetune.names=['3.*']"],
    "attack": ["attack.kind=scale", "attack.fraction=0.2"],
}


def _keys(feature: str) -> set[str]:
    return {o.split("=", 1)[0] for o in FEATURES[feature]}


def _named(feature: str, message: str) -> bool:
    key, value = FEATURES[feature][0].split("=", 1)
    return key in message or value in message


# two values of one key are alternatives, not a combination
PAIRS = [(a, b) for a, b in itertools.combinations(FEATURES, 2) if not _keys(a) & _keys(b)]


@pytest.mark.slow
@pytest.mark.parametrize(("a", "b"), PAIRS, ids=[f"{a}+{b}" for a, b in PAIRS])
def test_each_pair_runs_or_is_refused_naming_both(tmp_path: Path, a: str, b: str) -> None:
    overrides = [*BASE, *FEATURES[a], *FEATURES[b], f"output_dir={tmp_path / 'run'}"]
    try:
        result = Experiment(load_config(None, overrides)).run()
    except ConfigError as refused:
        message = str(refused)
        assert _named(a, message) and _named(b, message), message
        return
    assert [m["round"] for m in result.metrics] == [1, 2]
    for name, t in result.model.state_dict().items():
        if t.is_floating_point():
            assert bool(torch.isfinite(t).all()), f"{a}+{b}: {name} is not finite"
