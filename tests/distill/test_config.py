"""clients.models and distill.* are checked with the config, each error naming its key."""

from __future__ import annotations

import pytest

from fedloom.config import load_config
from fedloom.core.errors import ConfigError

HET = "clients.models=[{model: logreg, fraction: 0.5}, {model: mlp_2nn, fraction: 0.5}]"


def _refused(*overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(None, list(overrides))
    return str(info.value)


def test_without_the_key_every_client_has_model_name() -> None:
    config = load_config(None, ["strategy.name=feddf"])
    assert config.clients.models == []
    assert config.distill.data is None and config.distill.holdout == 0.1


def test_both_forms_are_accepted() -> None:
    config = load_config(
        None,
        [
            "clients.num=4",
            "strategy.name=feddf",
            "clients.models=[{model: cnn, clients: [0, 3]}, {model: logreg, fraction: 1.0}]",
        ],
    )
    assert [m.model for m in config.clients.models] == ["cnn", "logreg"]
    assert config.clients.models[0].clients == [0, 3]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "clients.models=[{model: cnn, fraction: 0.5}, {model: logreg, fraction: 0.4}]",
            "sum to 1",
        ),
        ("clients.models=[{model: cnn, fraction: 0.5, clients: [1]}]", "exactly one of fraction"),
        ("clients.models=[{model: resnet9, fraction: 1.0}]", "resnet9"),
        ("clients.models=[{model: cnn, clients: [0, 12]}]", "outside 0..9"),
        (
            "clients.models=[{model: cnn, clients: [0, 1]}, {model: logreg, clients: [1]}]",
            "more than one",
        ),
        ("clients.models=[{model: cnn, clients: [0, 1]}]", "no model to clients [2, 3, 4, 5, 6]"),
        ("distill.data=imagenet", "imagenet"),
        ("distill.data=digits:valid", "split must be one of train, test"),
        ("distill.holdout=1.5", "distill.holdout"),
        ("distill.steps=-1", "distill.steps"),
        ("distill.step_scale=0", "distill.step_scale"),
        ("distill.optimizer=rmsprop", "distill.optimizer"),
    ],
)
def test_bad_values_name_the_key(override: str, expected: str) -> None:
    message = _refused("strategy.name=feddf", override)
    assert expected in message
    assert message.count("\n") <= 1, message  # one line per problem


def test_models_with_a_single_model_strategy_are_refused_naming_both() -> None:
    message = _refused(HET)
    assert "clients.models" in message and "strategy.name=fedavg" in message
    assert "feddf" in message and "fedmd" in message


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("privacy.mode=central", "privacy.mode=central"),
        ("privacy.mode=local", "privacy.mode=local"),
        ("compression.prune=0.5", "compression.prune"),
        ("finetune.mode=last_k", "finetune.mode=last_k"),
        ("strategy.aggregator=median", "strategy.aggregator=median"),
        ("task.name=regression", "task.name=regression"),
        ("simulation.vectorize=on", "simulation.vectorize=on"),
    ],
)
@pytest.mark.parametrize("strategy", ["feddf", "fedmd"])
def test_what_cannot_compose_is_refused_naming_both(strategy: str, override: str, key: str) -> None:
    message = _refused(f"strategy.name={strategy}", "privacy.noise_multiplier=1.0", override)
    assert key in message and f"strategy.name={strategy}" in message


def test_error_feedback_across_architectures_is_refused_and_off_is_accepted() -> None:
    message = _refused("strategy.name=feddf", HET, "compression.up=int8")
    assert "compression.up=int8" in message and "strategy.name=feddf" in message
    config = load_config(
        None,
        ["strategy.name=feddf", HET, "compression.up=int8", "compression.error_feedback=false"],
    )
    assert config.compression.up == "int8"


def test_a_rate_feddf_would_ignore_is_refused_and_the_ones_it_uses_are_accepted() -> None:
    message = _refused("strategy.name=feddf", "distill.step_scale=0.3", "distill.lr=0.01")
    assert "distill.lr=0.01" in message and "distill.step_scale=null" in message
    for used in (
        [],  # no step_scale by default
        ["distill.step_scale=null"],
        ["distill.optimizer=sgd"],
        ["strategy.name=fedmd"],
    ):
        load_config(None, ["strategy.name=feddf", "distill.lr=0.01", *used])
