"""What a DP run claims must hold in deployment: secure draws everywhere under
``secure_rng``, no client ids or per-client statistics released, PRV accounting with an
RDP fallback, per-client DP-SGD calibration, client state kept off the server."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import pytest
import torch
from opacus.accountants import RDPAccountant
from safetensors import safe_open
from torch import nn

import fedloom.privacy.accountant as accountant_module
from fedloom.client.client import Client
from fedloom.client.context import FitContext
from fedloom.client.store import load_client_states
from fedloom.client.trainer import TrainConfig
from fedloom.config import load_config
from fedloom.core.errors import ConfigError
from fedloom.core.message import Message
from fedloom.data.base import TensorData
from fedloom.experiment import Experiment, RunResult, resume
from fedloom.privacy.accountant import Accountant
from fedloom.privacy.dpsgd import ClientLedgers, DPSGDTrainer
from fedloom.privacy.feature import RELEASE_WARNING, SEEDED_WARNING
from fedloom.privacy.local import ParticipationLedger, local_dp_hook
from fedloom.privacy.noise import SeededNoise
from fedloom.privacy.sampler import PoissonSampler
from fedloom.server.checkpoint import load_checkpoint
from fedloom.server.sampler import UniformSampler

BASE = [
    "clients.num=10",
    "clients.per_round=5",
    "model.name=logreg",
    "train.lr=0.1",
    "train.local_epochs=1",
    "privacy.clip=1.0",
]
CENTRAL = ["privacy.mode=central", "privacy.noise_multiplier=1.0"]


def _experiment(tmp: Path, *overrides: str) -> Experiment:
    return Experiment(load_config(None, [*BASE, f"output_dir={tmp}", *overrides]))


def _run(tmp: Path, *overrides: str) -> RunResult:
    return _experiment(tmp, *overrides).run()


def _weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(r.levelno == logging.WARNING and r.getMessage() == text for r in caplog.records)


# -- 1. secure_rng drives every privacy-relevant draw ------------------------------------


def test_secure_client_sampling_differs_between_runs_with_the_same_seed(tmp_path: Path) -> None:
    runs = [_experiment(tmp_path / k, *CENTRAL, "privacy.secure_rng=true") for k in "ab"]
    draws = [[r.server.sampler.sample(rnd) for rnd in range(1, 9)] for r in runs]
    assert draws[0] != draws[1]  # equal with probability 2^-80
    seeded = [_experiment(tmp_path / k, *CENTRAL) for k in "cd"]
    assert [seeded[0].server.sampler.sample(r) for r in range(1, 9)] == [
        seeded[1].server.sampler.sample(r) for r in range(1, 9)
    ]


def test_secure_samplers_are_fresh_draws_with_the_right_distribution() -> None:
    poisson = PoissonSampler(200, 0.25, seed=0, secure=True)
    sizes = [len(poisson.sample(1)) for _ in range(200)]  # the same round, asked again
    assert len({tuple(poisson.sample(1)) for _ in range(5)}) == 5
    assert sum(sizes) / len(sizes) == pytest.approx(50, rel=0.05)
    uniform = UniformSampler(50, 10, seed=0, secure=True)
    picks = [uniform.sample(1) for _ in range(5)]
    assert all(len(set(p)) == 10 and max(p) < 50 for p in picks)
    assert len({tuple(p) for p in picks}) == 5
    assert UniformSampler(50, 10, 0).sample(3) == UniformSampler(50, 10, 0).sample(3)


def test_dpsgd_secure_batches_are_not_a_function_of_the_seed(tmp_path: Path) -> None:
    def train(secure: bool) -> torch.Tensor:
        torch.manual_seed(0)
        data = TensorData(torch.randn(40, 4), torch.randint(0, 2, (40,)))
        model = nn.Linear(4, 2)
        trainer = DPSGDTrainer(
            TrainConfig(batch_size=4, local_steps=10, lr=0.5, momentum=0.0),
            clip=1.0,
            noise_multipliers={"c": 0.0},  # no noise: only the batches can differ
            noise=SeededNoise(0, "t"),
            ledgers=ClientLedgers("rdp", 1e-5),
            secure_batches=secure,
        )
        trainer.train(
            model, data, torch.Generator().manual_seed(1), FitContext("c", 1, {}, {}, {}, 0)
        )
        return model.weight.detach().clone()

    assert torch.equal(train(False), train(False))
    assert not torch.equal(train(True), train(True))
    exp = _experiment(
        tmp_path, "privacy.mode=dpsgd", "privacy.noise_multiplier=1.0", "privacy.secure_rng=true"
    )
    assert isinstance(exp.parts.trainer, DPSGDTrainer) and exp.parts.trainer.secure_batches
    assert exp.server.sampler.secure  # type: ignore[attr-defined]


def test_local_noise_secure_per_client_and_seeded_reproducible(tmp_path: Path) -> None:
    update = {"w": torch.zeros(1000)}
    ledger = ParticipationLedger(1.0, "rdp")
    secure = local_dp_hook(1.0, 1.0, None, ledger)
    a = secure(update, FitContext("0", 1, {}, {}, {}, 0))["w"]
    b = secure(update, FitContext("1", 1, {}, {}, {}, 0))["w"]
    again = secure(update, FitContext("0", 1, {}, {}, {}, 0))["w"]
    assert not torch.equal(a, b) and not torch.equal(a, again)
    assert a.std().item() == pytest.approx(2.0, rel=0.1)  # z · 2C
    local = ["privacy.mode=local", "privacy.noise_multiplier=0.5", "rounds=1"]
    secure_runs = [_run(tmp_path / k, *local, "privacy.secure_rng=true").model for k in "ab"]
    seeded_runs = [_run(tmp_path / k, *local).model for k in "cd"]
    assert not torch.equal(_weights(secure_runs[0]), _weights(secure_runs[1]))
    assert torch.equal(_weights(seeded_runs[0]), _weights(seeded_runs[1]))  # bit-reproducible


def test_seeded_dp_run_warns_once_that_it_is_for_research(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        _run(tmp_path / "local", "privacy.mode=local", "privacy.noise_multiplier=1.0", "rounds=2")
    assert _warnings(caplog, SEEDED_WARNING) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _run(tmp_path / "secure", *CENTRAL, "rounds=2", "privacy.secure_rng=true")
        _run(tmp_path / "plain", "rounds=1")
    assert _warnings(caplog, SEEDED_WARNING) == 0


# -- 2. no client ids or per-client statistics released -----------------------------------

DEVICES = ["devices.enabled=true", "devices.availability_min=0.5", "devices.dropout=0.2"]


def test_dp_run_names_no_client_in_metrics_summary_or_plots(tmp_path: Path) -> None:
    result = _run(tmp_path, *CENTRAL, *DEVICES, "rounds=2")
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        for key in ("participants", "offline", "dropped", "missed_deadline", "partial_steps"):
            assert key not in m
        assert {"num_offline", "num_dropped", "num_missed_deadline", "epsilon"} <= set(m)
    assert not (tmp_path / "partition.csv").exists()
    assert not (tmp_path / "partition.png").exists()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == json.loads(json.dumps(result.summary))
    assert not {"finetune_importance", "noise_multipliers"} & set(summary["privacy"])


def test_release_client_info_names_them_again_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        result = _run(tmp_path, *CENTRAL, *DEVICES, "rounds=1", "privacy.release_client_info=true")
    assert _warnings(caplog, RELEASE_WARNING) == 1
    assert "participants" in result.metrics[0] and (tmp_path / "partition.csv").is_file()
    plain = _run(tmp_path / "plain", *DEVICES, "rounds=1")  # no DP: nothing to withhold
    assert "participants" in plain.metrics[0]


def _failing_and_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    """Client 3 crashes every round; client 4 claims a float sample count (rejected)."""
    real = Client.handle

    def handle(self: Client, message: Message) -> Message:
        if self.client_id == "3":
            raise RuntimeError(f"client {self.client_id} crashed")
        reply = real(self, message)
        if self.client_id == "4":
            return dataclasses.replace(reply, meta={**reply.meta, "num_examples": 1.5})
        return reply

    monkeypatch.setattr(Client, "handle", handle)


@pytest.mark.parametrize("release", [False, True])
def test_dp_run_logs_name_no_client_unless_released(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, release: bool
) -> None:
    _failing_and_rejected(monkeypatch)
    every = ["clients.per_round=10", "rounds=2", f"privacy.release_client_info={release}"]
    with caplog.at_level(logging.DEBUG, logger="fedloom"):
        result = _run(tmp_path, *CENTRAL, *every)
    assert [m["num_rejected"] for m in result.metrics] == [1, 1]
    lines = [r.getMessage() for r in caplog.records]
    failures = [line for line in lines if "failed in round" in line]
    rejections = [line for line in lines if "rejected update from" in line]
    assert failures and rejections
    named = [line for line in lines if re.search(r"client [0-9]", line)]
    if release:
        assert any("client 3" in line for line in failures)
        assert any("client 4" in line for line in rejections)
    else:
        assert named == [], named
        assert all(line.startswith(("a client", "round")) for line in failures + rejections)


def test_importance_on_client_data_is_refused_with_dp(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _experiment(tmp_path, *CENTRAL, "finetune.mode=importance")
    assert "finetune.mode=importance" in str(info.value)
    assert "privacy.mode=central" in str(info.value)


def test_importance_from_pretrained_weights_reads_no_client_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fedloom.finetune.importance as importance

    def no_data(*args: object) -> None:
        raise AssertionError("importance scoring read client data")

    monkeypatch.setattr(importance, "tensor_scores", no_data)
    exp = _experiment(
        tmp_path,
        *CENTRAL,
        "model.name=mlp_2nn",
        "finetune.mode=importance",
        "finetune.importance_source=weights",
        "finetune.fraction=0.5",
    )
    scores = exp.parts.notes["finetune_importance"]
    model = exp.model
    for name, score in scores.items():
        assert score == pytest.approx(float(model.get_parameter(name).abs().mean()))


def test_client_state_stays_out_of_the_servers_checkpoint(tmp_path: Path) -> None:
    args = [*CENTRAL, "compression.up=topk:0.1", "compression.error_feedback=true"]
    whole = _run(tmp_path / "whole", *args, "rounds=3")
    _run(tmp_path / "split", *args, "rounds=2")
    ckpt_dir = tmp_path / "split" / "checkpoint"
    ckpt = load_checkpoint(ckpt_dir)
    assert ckpt.client_states == {}
    slots = sorted(ckpt_dir.glob("tensors-*.safetensors"))  # the two slots, rounds 1 and 2
    assert len(slots) == 2
    for tensors in slots:
        with safe_open(str(tensors), "pt") as f:
            assert not [k for k in f.keys() if k.startswith("client/")]  # noqa: SIM118
    stored = load_client_states(tmp_path / "split" / "clients", 2)
    assert stored and all(
        any(k.startswith("compression.residual.") for k in s) for s in stored.values()
    )
    assert sorted(p.name for p in (tmp_path / "split" / "clients").iterdir()) == [
        "base.json",
        "has.bin",
        "layout.json",
        "rows.bin",
    ]  # one store; round 2's journal removed once the checkpoint committed
    resumed = resume(tmp_path / "split", ["rounds=3"]).run()
    assert torch.equal(_weights(whole.model), _weights(resumed.model))  # residuals came back


def test_a_checkpoint_with_client_tensors_still_restores(tmp_path: Path) -> None:
    from fedloom.server.checkpoint import save_checkpoint

    exp = _experiment(tmp_path, "rounds=1")
    exp.run()
    old = load_checkpoint(tmp_path / "checkpoint")
    old.client_states = {"3": {"compression.residual.weight": torch.ones(2)}}
    save_checkpoint(tmp_path / "checkpoint", old)  # as older versions wrote it
    restored = resume(tmp_path)
    assert torch.equal(restored.clients["3"].state["compression.residual.weight"], torch.ones(2))


# -- 3. accounting: PRV by default, RDP fallback recorded, per-client DP-SGD calibration -----


def test_prv_is_the_default_and_rdp_is_reported_beside_it(tmp_path: Path) -> None:
    result = _run(tmp_path, *CENTRAL, "rounds=2")
    assert all(m["accountant"] == "prv" for m in result.metrics)
    privacy = result.summary["privacy"]
    assert privacy["accountant"] == "prv" and privacy["epsilon_accountant"] == "prv"
    reference = RDPAccountant()  # Opacus' own, independent of fedloom's adapter
    reference.history = [(1.0, 0.5, 2)]
    assert privacy["epsilon_rdp"] == pytest.approx(reference.get_epsilon(delta=1e-5))
    assert privacy["epsilon"] < privacy["epsilon_rdp"]


def test_a_failing_prv_falls_back_to_rdp_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opacus.accountants import PRVAccountant

    def fails(self: object, delta: float, **kw: object) -> float:
        raise ValueError("numerical failure")

    monkeypatch.setattr(PRVAccountant, "get_epsilon", fails)
    monkeypatch.setattr(accountant_module, "_EPSILONS", {})
    result = _run(tmp_path, *CENTRAL, "rounds=2", "seed=7")
    assert [m["accountant"] for m in result.metrics] == ["rdp", "rdp"]
    reference = RDPAccountant()
    reference.history = [(1.0, 0.5, 2)]
    assert result.metrics[-1]["epsilon"] == pytest.approx(reference.get_epsilon(delta=1e-5))

    monkeypatch.setattr(PRVAccountant, "get_epsilon", lambda self, delta, **kw: float("nan"))
    acc = Accountant()
    acc.step(1.3, 0.2, 5)
    assert acc.epsilon(1e-5) == acc.epsilon_by("rdp", 1e-5)[0] and acc.last_kind == "rdp"


def test_dpsgd_calibrates_each_client_from_its_own_rate_and_steps(tmp_path: Path) -> None:
    exp = _experiment(
        tmp_path,
        "clients.num=4",
        "clients.per_round=4",
        "data.partition=dirichlet",
        "data.alpha=0.5",
        "train.batch_size=16",
        "rounds=2",
        "privacy.mode=dpsgd",
        "privacy.target_epsilon=3",
        "privacy.accountant=rdp",
    )
    trainer = exp.parts.trainer
    assert isinstance(trainer, DPSGDTrainer)
    sizes = [len(ix) for ix in exp.data.client_indices]
    assert len({-(-n // 16) for n in sizes}) > 1  # different step counts and rates
    for k, n in enumerate(sizes):
        reference = RDPAccountant()
        reference.history = [(trainer.noise_multipliers[str(k)], 16 / n, 2 * -(-n // 16))]
        assert 0.99 * 3 <= reference.get_epsilon(delta=1e-5) <= 3  # each client's own ε
