"""FedDF and FedMD runs on digits: heterogeneous shapes, metrics, codecs, bytes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from fedloom.config import load_config
from fedloom.core.errors import UpdateRejected
from fedloom.core.message import Message
from fedloom.experiment import Experiment, resume
from fedloom.server.strategy import VIEW_KEY

BASE = [
    "clients.num=6",
    "clients.per_round=6",
    "train.local_epochs=1",
    "train.batch_size=32",
    "distill.steps=15",
    "distill.check_every=5",
    "seed=5",
]
HET = [
    "strategy.name=feddf",
    "model.name=logreg",
    "clients.models=[{model: logreg, clients: [0, 2, 4]}, {model: mlp_2nn, fraction: 1.0}]",
]


def _run(tmp_path: Path, name: str, *overrides: str) -> Experiment:
    config = load_config(None, [*BASE, *overrides, f"output_dir={tmp_path / name}"])
    return Experiment(config)


@pytest.fixture(scope="module")
def het(tmp_path_factory: pytest.TempPathFactory) -> tuple[Experiment, list[dict[str, Any]]]:
    """A two-round heterogeneous FedDF run (logreg on even clients, mlp_2nn on odd)."""
    experiment = _run(tmp_path_factory.mktemp("het"), "het", *HET, "rounds=2")
    return experiment, experiment.run().metrics


def test_heterogeneous_models_have_their_architecture_shapes(het) -> None:
    experiment, _ = het
    for cid, client in experiment.clients.items():
        hidden = client.model.state_dict()["1.weight"].shape
        assert hidden == ((10, 64) if int(cid) % 2 == 0 else (200, 64)), cid
    strategy = experiment.server.strategy
    views = strategy.views(experiment.server.global_state)
    assert {a: tuple(v["1.weight"].shape) for a, v in views.items()} == {
        "logreg": (10, 64),
        "mlp_2nn": (200, 64),
    }
    assert [strategy.client_view(str(k)) for k in range(6)] == ["logreg", "mlp_2nn"] * 3
    # a client refuses another architecture's weights, named in the fit message
    wrong = Message("fit", 1, "server", b"", {VIEW_KEY: "mlp_2nn"})
    with pytest.raises(UpdateRejected, match="trains logreg"):
        experiment.clients["0"].handle(wrong)


def test_feddf_reports_each_architecture(het) -> None:
    experiment, lines = het
    assert [m["num_clients"] for m in lines] == [6, 6]
    last = lines[-1]
    assert set(last["test_accuracy_by_model"]) == {"logreg", "mlp_2nn"}
    assert last["test_accuracy"] == last["test_accuracy_by_model"]["logreg"]
    # both well above chance (0.1) after two rounds (seen: logreg 0.727, mlp_2nn 0.582)
    assert min(last["test_accuracy_by_model"].values()) > 0.5, last["test_accuracy_by_model"]
    for arch, run in last["distill"].items():
        assert 1 <= run["steps"] <= 15, arch
        assert run["agreement_after"] >= run["agreement_before"], arch
    summary = json.loads((experiment.run_dir / "summary.json").read_text())
    assert summary["models"] == {"logreg": 650, "mlp_2nn": 55210}
    assert summary["clients_per_model"] == {"logreg": 3, "mlp_2nn": 3}
    # the saved model is the first architecture's
    assert experiment.model.state_dict()["1.weight"].shape == (10, 64)


def test_feddf_resumes_to_the_same_models(tmp_path: Path, het) -> None:
    _, whole = het
    _run(tmp_path, "cut", *HET, "rounds=1").run()
    resumed = resume(tmp_path / "cut", ["rounds=2"]).run()
    assert resumed.metrics[-1]["test_accuracy_by_model"] == whole[-1]["test_accuracy_by_model"]
    assert resumed.metrics[-1]["distill"] == whole[-1]["distill"]


def test_feddf_with_an_uplink_codec(tmp_path: Path, het) -> None:
    _, raw = het
    int8 = _run(
        tmp_path,
        "int8",
        *HET,
        "rounds=1",
        "compression.up=int8",
        "compression.error_feedback=false",
    ).run()
    raw_up, int8_up = raw[0]["bytes_up"], int8.metrics[0]["bytes_up"]
    assert int8_up < 0.35 * raw_up  # 1 byte per weight instead of 4, plus scales and headers
    assert int8.metrics[0]["test_accuracy"] == pytest.approx(raw[0]["test_accuracy"], abs=0.05)
    # with error feedback: one architecture, one residual layout
    one = _run(
        tmp_path,
        "one",
        "strategy.name=feddf",
        "model.name=logreg",
        "rounds=1",
        "compression.up=int8",
    ).run()
    assert one.metrics[0]["bytes_up"] < 0.35 * raw[0]["bytes_up"]
    assert one.metrics[0]["distill"]["logreg"]["steps"] >= 1


def _fedmd(tmp_path: Path, name: str, *overrides: str) -> Experiment:
    experiment = _run(tmp_path, name, "strategy.name=fedmd", *overrides)
    experiment.run()
    return experiment


def _last(experiment: Experiment) -> dict[str, Any]:
    return [json.loads(x) for x in (experiment.run_dir / "metrics.jsonl").read_text().splitlines()][
        -1
    ]


def test_fedmd_traffic_does_not_depend_on_model_size(tmp_path: Path) -> None:
    small = _fedmd(tmp_path, "small", "model.name=logreg", "rounds=1")
    large = _fedmd(tmp_path, "large", "model.name=mlp_2nn", "rounds=1")
    mixed = _fedmd(
        tmp_path,
        "mixed",
        "model.name=logreg",
        "rounds=2",  # the second round digests the first one's consensus
        "clients.models=[{model: logreg, fraction: 0.5}, {model: mlp_2nn, fraction: 0.5}]",
    )
    lines = [_last(e) for e in (small, large, mixed)]
    # the same payload whatever the models: only the JSON header (a loss, a model's
    # name) differs by a few bytes
    for key in ("bytes_up", "bytes_down"):
        sizes = [line[key] for line in lines]
        assert max(sizes) - min(sizes) <= 6 * 16, (key, sizes)
    # every client sends its scores on the public set: examples x 10 classes x 4 bytes
    summary = json.loads((small.run_dir / "summary.json").read_text())
    public = summary["public_examples"]
    assert 6 * public * 40 < lines[0]["bytes_up"] < 6 * (public * 40 + 2048)
    assert lines[0]["bytes_up"] < 55210 * 4  # all six cost less than one mlp_2nn update
    for line in lines:
        low, mean = line["client_accuracy_min"], line["client_accuracy_mean"]
        assert 0 <= low <= mean <= 1
        assert line["test_accuracy"] == pytest.approx(mean)
    assert lines[2]["client_accuracy_mean"] > 0.5
    # no global model: each client keeps its own, in a state of one layout for all
    weights = [c.state["fedmd/weights"] for c in mixed.clients.values()]
    assert all(w.shape == (55210,) for w in weights)
    assert not torch.equal(weights[0], weights[2])
