"""Vectorized clients (torch.func): each client's result equals the sequential path's."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import fedloom.features  # noqa: F401  (registers the built-in components)
from fedloom.algorithms.fedprox import proximal_term
from fedloom.client.client import Client
from fedloom.client.config import TrainConfig
from fedloom.client.trainer import LocalTrainer
from fedloom.compression.codec import RawCodec
from fedloom.config import load_config
from fedloom.core.errors import ConfigError
from fedloom.core.message import Message
from fedloom.data.base import TensorData
from fedloom.experiment import Experiment
from fedloom.simulation.group import GroupPlan, VectorizedTransport
from fedloom.simulation.vectorized import ClientJob, StepRule, train_group
from fedloom.transport.base import Failure
from fedloom.transport.inprocess import Handler, InProcessTransport

SIZES = [13, 7, 20, 3]
"""Client data sizes: with batches of 5 they run 3, 2, 4 and 1 steps per epoch, and
every size but 20 ends its epoch on a short batch (masked)."""
CODEC = RawCodec()


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def client_data(k: int, n: int) -> TensorData:
    gen = torch.Generator().manual_seed(100 + k)
    return TensorData(torch.randn(n, 6, generator=gen), torch.randint(0, 3, (n,), generator=gen))


def clients(trainer: LocalTrainer, model: nn.Module) -> dict[str, Handler]:
    """Each client's handler (its ``handle``), as the experiment gives the transport."""
    made = [
        Client(str(k), client_data(k, n), model, trainer, seed=5, down=CODEC, up=CODEC)
        for k, n in enumerate(SIZES)
    ]
    return {c.client_id: c.handle for c in made}


def fit_messages(model: nn.Module, rnd: int = 1) -> dict[str, Message]:
    payload = CODEC.encode({n: p.detach().clone() for n, p in model.named_parameters()})
    return {str(k): Message("fit", rnd, "server", payload, {}) for k in range(len(SIZES))}


def updates(replies) -> dict[str, dict[str, torch.Tensor]]:
    out = {}
    for cid, reply in replies:
        assert not isinstance(reply, Failure), reply
        out[cid] = CODEC.decode(reply.payload)
    return out


@pytest.mark.parametrize(
    ("config", "mu"),
    [
        (TrainConfig(lr=0.1, momentum=0.0, batch_size=5, local_epochs=2), 0.0),
        (TrainConfig(lr=0.05, momentum=0.9, weight_decay=0.01, batch_size=5, local_epochs=2), 0.0),
        (TrainConfig(lr=0.1, momentum=0.5, batch_size=5, local_epochs=1), 0.3),
    ],
    ids=["sgd", "momentum+weight_decay", "fedprox"],
)
def test_each_client_equals_the_sequential_client(config: TrainConfig, mu: float) -> None:
    model = mlp()
    trainer = LocalTrainer(config)
    if mu:
        trainer.penalties.append(proximal_term(mu))
    messages = fit_messages(model)
    sequential = updates(InProcessTransport(clients(trainer, model)).exchange(messages))
    plan = GroupPlan(StepRule(config.lr, config.momentum, config.weight_decay, mu))
    vectorized = updates(VectorizedTransport(clients(trainer, model), plan).exchange(messages))
    assert sorted(vectorized) == sorted(sequential) == ["0", "1", "2", "3"]
    for cid, update in sequential.items():
        assert update["0.weight"].abs().max() > 1e-3  # it trained
        for name, value in update.items():
            torch.testing.assert_close(vectorized[cid][name], value, atol=1e-5, rtol=0)


def test_masked_steps_leave_a_client_as_if_trained_alone() -> None:
    """A client's result does not depend on the group it is padded into."""
    model = mlp()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    rule = StepRule(lr=0.2, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    jobs = []
    for k, n in enumerate(SIZES):
        order = torch.randperm(n, generator=gen)
        jobs.append(ClientJob(client_data(k, n), list(order.split(5))))
    jobs.insert(2, ClientJob(client_data(9, 0), []))  # no data: no step, unchanged
    together = train_group(model, jobs, start, rule, F.cross_entropy)
    for job, result in zip(jobs, together, strict=True):
        (alone,) = train_group(model, [job], start, rule, F.cross_entropy)
        assert result.steps == alone.steps == len(job.batches)
        assert result.loss == pytest.approx(alone.loss, abs=1e-6)
        assert (result.loss > 0) == bool(job.batches)
        for name, value in alone.local.items():
            torch.testing.assert_close(result.local[name], value, atol=1e-6, rtol=0)


def test_hand_computed_step_of_a_one_weight_model() -> None:
    """Loss (w·x − y)² on one example: w ← w − lr·2x(wx − y); the padded second example
    of the short client must not count."""
    model = nn.Linear(1, 1, bias=False)
    start = {"weight": torch.tensor([[1.0]])}
    data = TensorData(torch.tensor([[2.0], [1.0]]), torch.tensor([[3.0], [0.0]]))
    jobs = [ClientJob(data, [torch.tensor([0])]), ClientJob(data, [torch.tensor([0, 1])])]
    short, full = train_group(model, jobs, start, StepRule(lr=0.1), F.mse_loss)
    # short: grad = 2·2·(2 − 3) = −4 → w = 1.4; full: mean of −4 and 2·1·(1 − 0) = 2 → −1
    assert short.local["weight"].item() == pytest.approx(1.4)
    assert full.local["weight"].item() == pytest.approx(1.1)
    assert short.loss == pytest.approx(1.0) and full.loss == pytest.approx(1.0)


def _digits(extra: list[str], tmp: Path, vectorize: str) -> Experiment:
    base = [
        "model.name=logreg",
        "clients.num=8",
        "clients.per_round=5",
        "rounds=3",
        "train.batch_size=16",
        "data.partition=dirichlet",
        "seed=2",
        f"simulation.vectorize={vectorize}",
        f"output_dir={tmp / vectorize}",
    ]
    return Experiment(load_config(None, [*base, *extra]))


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["strategy.name=fedprox", "strategy.mu=0.1"],
        ["strategy.name=scaffold", "train.momentum=0"],
        ["privacy.mode=local", "privacy.noise_multiplier=0.3", "privacy.clip=5.0"],
    ],
    ids=["fedavg-momentum", "fedprox", "scaffold", "local-dp"],
)
def test_a_vectorized_run_ends_with_the_sequential_weights(extra: list[str], tmp_path: Path):
    off = _digits(extra, tmp_path, "off")
    on = _digits(extra, tmp_path, "on")
    final_off, final_on = off.run().metrics, on.run().metrics
    assert on.run_dir != off.run_dir and len(final_on) == len(final_off) == 3
    assert isinstance(on.server.transport, VectorizedTransport)
    assert not isinstance(off.server.transport, VectorizedTransport)
    for name, value in off.server.global_state.items():
        torch.testing.assert_close(on.server.global_state[name], value, atol=1e-5, rtol=0)
    assert final_on[-1]["test_accuracy"] == pytest.approx(final_off[-1]["test_accuracy"])


class WithBatchNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16))
        self.norm = nn.BatchNorm1d(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.body(x)))


def _user_run(model: nn.Module, vectorize: str, tmp: Path) -> Experiment:
    cfg = load_config(
        None,
        [
            "clients.num=4",
            "clients.per_round=2",
            "rounds=1",
            f"simulation.vectorize={vectorize}",
            f"output_dir={tmp / vectorize}",
        ],
    )
    return Experiment(cfg, model=model)


def test_on_refuses_a_batch_norm_model_naming_the_module(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        _user_run(WithBatchNorm(), "on", tmp_path)
    message = str(refused.value)
    assert "simulation.vectorize=on" in message
    assert "norm (BatchNorm1d)" in message and "running statistics" in message


def test_auto_falls_back_to_sequential_and_says_why_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="fedloom.simulation.vectorize_feature"):
        experiment = _user_run(WithBatchNorm(), "auto", tmp_path)
        experiment.run()
    assert not isinstance(experiment.server.transport, VectorizedTransport)
    said = [r.getMessage() for r in caplog.records if "clients train one by one" in r.getMessage()]
    assert len(said) == 1 and "norm (BatchNorm1d)" in said[0]


def test_dropout_auto_stays_sequential_and_on_vectorizes_with_a_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def model() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Dropout(0.5), nn.Linear(16, 10))

    with caplog.at_level(logging.INFO, logger="fedloom.simulation.vectorize_feature"):
        auto = _user_run(model(), "auto", tmp_path)
        on = _user_run(model(), "on", tmp_path)
    assert not isinstance(auto.server.transport, VectorizedTransport)
    assert isinstance(on.server.transport, VectorizedTransport)
    text = caplog.text
    assert "2 (Dropout) draw random masks" in text and "randomness='different'" in text
    assert on.run().metrics[0]["num_clients"] == 2


def test_on_refuses_dpsgd_at_config_time_naming_both() -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(
            None,
            ["simulation.vectorize=on", "privacy.mode=dpsgd", "privacy.noise_multiplier=1"],
        )
    assert "simulation.vectorize=on" in str(refused.value) and "privacy.mode=dpsgd" in str(
        refused.value
    )


def test_auto_trains_dpsgd_clients_one_by_one(tmp_path: Path) -> None:
    experiment = _digits(
        ["privacy.mode=dpsgd", "privacy.noise_multiplier=1.0", "rounds=1"], tmp_path, "auto"
    )
    assert not isinstance(experiment.server.transport, VectorizedTransport)


def test_yaml_on_and_off_are_words_not_booleans() -> None:
    assert load_config(None, ["simulation.vectorize=on"]).simulation.vectorize == "on"
    assert load_config(None, ["simulation.vectorize=off"]).simulation.vectorize == "off"


def test_a_failing_client_is_a_failure_and_the_others_still_train() -> None:
    model = mlp()
    trainer = LocalTrainer(TrainConfig(lr=0.1, batch_size=5))
    messages = fit_messages(model)
    messages["2"] = Message("evaluate", 1, "server", messages["2"].payload, {})
    plan = GroupPlan(StepRule(0.1, 0.9))
    replies = dict(VectorizedTransport(clients(trainer, model), plan).exchange(messages))
    assert isinstance(replies["2"], Failure) and "cannot handle" in replies["2"].reason
    assert all(not isinstance(replies[c], Failure) for c in ("0", "1", "3"))


def test_auto_vectorizes_a_small_eligible_model(tmp_path: Path) -> None:
    experiment = _digits([], tmp_path, "auto")  # logreg: 650 parameters, no dropout
    assert isinstance(experiment.server.transport, VectorizedTransport)
    assert experiment.parts.notes["vectorized_clients"] is True
