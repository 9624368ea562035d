"""A vectorized group answering with one ``GroupReply``: the same rows, metas and bytes as
the clients' own replies, a diverged client failing alone, and whole runs that end
with the weights of the per-client path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from fedloom.client.client import Client
from fedloom.client.config import TrainConfig
from fedloom.client.trainer import LocalTrainer
from fedloom.compression.codec import RawCodec
from fedloom.config import load_config
from fedloom.core.message import Message
from fedloom.data.base import TensorData
from fedloom.experiment import Experiment
from fedloom.server import server as server_module
from fedloom.server.group_reply import GroupReply
from fedloom.simulation.group import GroupPlan, VectorizedTransport
from fedloom.simulation.vectorized import StepRule
from fedloom.transport.base import Failure
from fedloom.transport.wire import frame_size

SIZES = [13, 7, 20, 3]
CODEC = RawCodec()
CONFIG = TrainConfig(lr=0.1, momentum=0.5, batch_size=5, local_epochs=2)
PLAN = GroupPlan(StepRule(0.1, 0.5))


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def make_clients(model: nn.Module, poisoned: int | None = None, hooks=()) -> list[Client]:
    made = []
    for k, n in enumerate(SIZES):
        gen = torch.Generator().manual_seed(100 + k)
        x = torch.randn(n, 6, generator=gen)
        if k == poisoned:
            x[0, 0] = float("nan")  # its training diverges
        data = TensorData(x, torch.randint(0, 3, (n,), generator=gen))
        trainer = LocalTrainer(CONFIG)
        made.append(Client(str(k), data, model, trainer, seed=5, down=CODEC, up=CODEC, hooks=hooks))
    return made


def fit_messages(model: nn.Module) -> dict[str, Message]:
    payload = CODEC.encode({n: p.detach().clone() for n, p in model.named_parameters()})
    return {str(k): Message("fit", 3, "server", payload, {}) for k in range(len(SIZES))}


def test_the_group_reply_holds_each_clients_own_reply() -> None:
    model = mlp()
    messages = fit_messages(model)
    handlers = {c.client_id: c.handle for c in make_clients(model)}
    one_by_one = dict(VectorizedTransport(handlers, PLAN).exchange(messages))
    (group,) = list(VectorizedTransport(handlers, PLAN).exchange_grouped(messages))
    assert isinstance(group, GroupReply) and group.round == 3
    assert sorted(group.client_ids) == ["0", "1", "2", "3"]
    for i, cid in enumerate(group.client_ids):
        reply = one_by_one[cid]
        assert isinstance(reply, Message)
        assert group.metas[i] == reply.meta  # num_examples, train_loss, steps
        assert group.frame_size(i) == frame_size(reply)  # bytes counted exactly
        update = CODEC.decode(reply.payload)
        assert set(update) == set(group.updates)
        for name, value in update.items():
            assert value.abs().max() > 1e-4  # it trained
            torch.testing.assert_close(group.updates[name][i], value, atol=1e-6, rtol=0)


def test_a_diverged_client_fails_alone() -> None:
    model = mlp()
    handlers = {c.client_id: c.handle for c in make_clients(model, poisoned=1)}
    items = list(VectorizedTransport(handlers, PLAN).exchange_grouped(fit_messages(model)))
    failures = [item for item in items if not isinstance(item, GroupReply)]
    (group,) = [item for item in items if isinstance(item, GroupReply)]
    assert [cid for cid, _ in failures] == ["1"]
    failure = failures[0][1]
    assert isinstance(failure, Failure) and failure.diverged
    assert "local training diverged" in failure.reason
    assert sorted(group.client_ids) == ["0", "2", "3"]
    assert all(bool(torch.isfinite(t).all()) for t in group.updates.values())


def test_clients_with_update_hooks_reply_one_by_one() -> None:
    model = mlp()
    scaled = [lambda update, ctx: {n: 0.5 * t for n, t in update.items()}]
    handlers = {c.client_id: c.handle for c in make_clients(model, hooks=scaled)}
    items = list(VectorizedTransport(handlers, PLAN).exchange_grouped(fit_messages(model)))
    assert len(items) == 4 and not any(isinstance(item, GroupReply) for item in items)


def _run(tmp: Path, name: str, extra: list[str]) -> Experiment:
    base = [
        "model.name=logreg",
        "clients.num=12",
        "clients.per_round=6",
        "rounds=3",
        "train.batch_size=16",
        "data.partition=dirichlet",
        "seed=4",
        "simulation.vectorize=on",
        f"output_dir={tmp / name}",
    ]
    experiment = Experiment(load_config(None, [*base, *extra]))
    experiment.run()
    return experiment


@pytest.mark.parametrize(
    "extra", [[], ["strategy.name=fedprox", "strategy.mu=0.1", "train.momentum=0"]]
)
def test_a_run_with_group_replies_ends_with_the_per_client_weights(
    extra: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups: list[int] = []
    collect = server_module.collect_group

    def counted(server, rnd, group, aggregator, tally) -> None:
        groups.append(len(group.client_ids))
        collect(server, rnd, group, aggregator, tally)

    monkeypatch.setattr(server_module, "collect_group", counted)
    grouped = _run(tmp_path, "grouped", extra)
    assert groups == [6, 6, 6]  # every round's clients came as one group reply
    # the server asking for one reply per client
    monkeypatch.setattr(server_module, "replies_of", lambda t, messages: t.exchange(messages))
    single = _run(tmp_path, "single", extra)
    for name, value in single.server.global_state.items():
        torch.testing.assert_close(grouped.server.global_state[name], value, atol=1e-6, rtol=0)
    lines = [e.metrics_log.path.read_text().splitlines() for e in (grouped, single)]
    for a, b in zip(*lines, strict=True):  # the same bytes counted, the same clients
        assert a.split('"bytes_up": ')[1][:12] == b.split('"bytes_up": ')[1][:12]
