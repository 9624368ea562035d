"""A model that does not fit the data is a config error naming both, before any round."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset
from typer.testing import CliRunner

import fedloom
from fedloom.cli import app
from fedloom.core.errors import ConfigError
from fedloom.models.fit import check_model_fits
from fedloom.models.registry import build_model, models_for


def test_a_cnn_on_flat_features_names_both_sides_and_the_models_that_fit():
    with pytest.raises(ConfigError) as error:
        build_model("cnn", (60,), 10, data_name="synthetic")
    (problem,) = error.value.problems
    assert problem == (
        "model cnn expects images of shape (C, H, W) but data synthetic gives (60,); "
        "use model.name=logreg or mlp_2nn"
    )
    assert models_for((60,)) == ["logreg", "mlp_2nn"]
    assert models_for((1, 8, 8)) == ["cnn", "cnn_mcmahan", "logreg", "mlp_2nn"]


def test_an_image_too_small_for_the_layers_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model cnn cannot take inputs of shape \(1, 2, 2\)"):
        build_model("cnn", (1, 2, 2), 10, data_name="tiny")


def test_cli_run_on_synthetic_with_the_default_cnn_exits_2(tmp_path):
    done = CliRunner(env={"COLUMNS": "1000"}).invoke(
        app, ["run", "data.name=synthetic", "rounds=1", f"output_dir={tmp_path / 'r'}"]
    )
    assert done.exit_code == 2
    assert "model cnn expects images of shape (C, H, W) but data synthetic gives (60,)" in (
        done.output
    )
    assert "use model.name=logreg or mlp_2nn" in done.output


def _net(inputs: int, outputs: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(inputs, 8), nn.Dropout(0.5), nn.Linear(8, outputs))


def test_check_model_fits_counts_outputs_and_leaves_no_trace():
    model = _net(4, 10)
    rng = torch.get_rng_state()
    assert check_model_fits(model, torch.ones(1, 4), 10, model_name="m", data_name="d") == 10
    assert model.training  # back in training mode
    assert torch.equal(torch.get_rng_state(), rng)  # the dropout draw did not move the RNG


def test_wrong_input_shape_names_model_data_and_shape():
    with pytest.raises(ConfigError) as error:
        check_model_fits(_net(4, 10), torch.ones(1, 20), 10, model_name="m", data_name="d")
    (problem,) = error.value.problems
    assert problem.startswith(
        "model m cannot take the inputs of data d: one example has shape (20,)"
    )
    assert "1x20 and 4x8" in problem


def test_fewer_outputs_than_classes_is_an_error_more_is_a_warning(caplog):
    with pytest.raises(ConfigError) as error:
        check_model_fits(_net(4, 5), torch.ones(1, 4), 10, model_name="m", data_name="d")
    assert error.value.problems == [
        "model m has 5 outputs but data d has 10 classes (labels 0..9); give the model 10 outputs"
    ]
    with caplog.at_level(logging.WARNING, logger="fedloom.models.fit"):
        assert check_model_fits(_net(4, 12), torch.ones(1, 4), 10, model_name="m", data_name="d")
    assert "has 12 outputs but data d has only 10 classes" in caplog.text


def test_a_model_returning_no_logits_is_refused():
    with pytest.raises(ConfigError, match=r"returns \(1, 2, 5\)"):
        check_model_fits(
            nn.Unflatten(1, (2, 5)), torch.ones(1, 10), 5, model_name="m", data_name="d"
        )


def test_federate_with_five_outputs_on_ten_labels_fails_before_any_round(tmp_path):
    x = torch.randn(100, 4, generator=torch.Generator().manual_seed(0))
    y = torch.arange(100) % 10
    data = TensorDataset(x, y)
    rounds: list[int] = []
    with pytest.raises(ConfigError, match="model custom has 5 outputs but data custom has 10"):
        fedloom.federate(
            _net(4, 5),
            data,
            data,
            {"clients.num": 2, "clients.per_round": 2, "rounds": 1},
            on_round=lambda m: rounds.append(m["round"]),
        )
    assert rounds == []
