"""Federated evaluation: clients evaluate the global model on their own held-out data."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from fedloom.config import load_config
from fedloom.core.errors import ConfigError
from fedloom.experiment import Experiment
from fedloom.server.client_eval import ClientEvaluation

BASE = [
    "model.name=logreg",
    "clients.num=10",
    "clients.per_round=10",
    "rounds=3",
    "train.lr=0.1",
    "eval.client_fraction=0.5",
]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_half_the_clients_report_and_the_statistics_match_the_table(tmp_path: Path) -> None:
    experiment = Experiment(load_config(None, [*BASE, f"output_dir={tmp_path}"]))
    client = experiment.clients["3"]
    whole = experiment.data.client(3)
    assert client.holdout is not None
    assert len(client.holdout) == math.ceil(0.2 * len(whole))  # carved from its own data
    assert len(client.data) + len(client.holdout) == len(whole)
    result = experiment.run()
    rows = _rows(tmp_path / "clients_eval.csv")
    assert list(rows[0]) == ["round", "client", "n", "accuracy", "loss"]
    for m in result.metrics:
        mine = [r for r in rows if int(r["round"]) == m["round"]]
        assert m["num_client_evals"] == len(mine) == 5
        acc = np.array([float(r["accuracy"]) for r in mine])
        n = np.array([int(r["n"]) for r in mine])
        assert m["client_accuracy_mean"] == pytest.approx(float((acc * n).sum() / n.sum()))
        assert m["client_accuracy_min"] == pytest.approx(acc.min())
        assert m["client_accuracy_p10"] == pytest.approx(float(np.percentile(acc, 10)))
        assert m["client_accuracy_std"] == pytest.approx(acc.std())
    assert result.metrics[-1]["client_accuracy_mean"] > 0.8


def test_personalized_evaluation_fine_tunes_first(tmp_path: Path) -> None:
    skewed = [*BASE, "data.partition=dirichlet", "data.alpha=0.1", "rounds=2"]
    plain = Experiment(load_config(None, [*skewed, f"output_dir={tmp_path / 'a'}"])).run()
    tuned = Experiment(
        load_config(None, [*skewed, "eval.personalize_steps=10", f"output_dir={tmp_path / 'b'}"])
    ).run()
    # on label-skewed clients a few local steps fit the client's own labels better
    a, b = plain.metrics[-1], tuned.metrics[-1]
    assert b["client_accuracy_mean"] > a["client_accuracy_mean"]
    assert b["test_accuracy"] == a["test_accuracy"]  # the global model is the same


def test_a_clients_report_is_checked_before_use() -> None:
    evaluation = ClientEvaluation(1.0, 0, ["accuracy", "loss"], "accuracy", None)
    assert evaluation.instructions(1, ["a", "b"]) == {
        "a": {"evaluate": True},
        "b": {"evaluate": True},
    }
    good = {"n": 10, "accuracy": 0.5, "loss": 1.0}
    for bad in (
        {**good, "n": 0},
        {**good, "n": True},
        {**good, "n": 2.0},
        {**good, "accuracy": math.nan},
        {**good, "loss": 1e31},
        {**good, "loss": 10**400},
        {**good, "extra": 1.0},
        {"n": 10, "accuracy": 0.5},
        "not a dict",
    ):
        evaluation.observe(1, "a", {"eval": bad})
        assert evaluation.reports == {}
    evaluation.observe(1, "b", {"eval": good})
    evaluation.observe(1, "c", {"eval": {**good, "accuracy": 0.0}})  # not asked: ignored
    evaluation.observe(1, "a", {"eval": {**good, "accuracy": 1.0, "n": 10**9}})
    stats = evaluation.round_metrics(1)
    # a's huge n is capped at twice the median (10 -> weight 20): (0.5·10 + 1·20) / 30
    assert stats["num_client_evals"] == 2
    assert stats["client_accuracy_mean"] == pytest.approx(25 / 30)


def test_dp_withholds_per_client_metrics_unless_released(tmp_path: Path) -> None:
    dp = ["privacy.mode=central", "privacy.noise_multiplier=1.0"]
    with pytest.raises(ConfigError, match="eval.client_fraction=0.5.*privacy.mode=central"):
        load_config(None, [*BASE, *dp])
    released = [*BASE, *dp, "privacy.release_client_info=true", f"output_dir={tmp_path}"]
    result = Experiment(load_config(None, released)).run()
    assert result.metrics[-1]["num_client_evals"] > 0
