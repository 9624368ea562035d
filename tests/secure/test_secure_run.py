"""``secure.mode=secagg`` in real runs: the masked sum is the plain sum, the model is
plain FedAvg's on the quantization grid, dropouts are recovered, bad stage messages are
rejected, an impossible round fails cleanly, and the config refuses what cannot work."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fedloom.config import load_config
from fedloom.core.errors import ConfigError
from fedloom.core.message import Message
from fedloom.experiment import Experiment, RunResult, resume
from fedloom.secure import messages as wire
from fedloom.secure.encoding import levels, packed_size
from fedloom.secure.round import SecureClientHandler, SecureRound
from fedloom.transport.base import Failure, Reply, Transport

BASE = [
    "clients.num=8",
    "clients.per_round=8",
    "model.name=logreg",
    "train.lr=0.1",
    "train.local_epochs=1",
    "eval_every=100",
]
SECURE = ["secure.mode=secagg"]

Tamper = Callable[[str, Message, Message], "Message | Failure | None"]
"""(client id, message sent, reply) -> a replacement reply, or None to keep it."""


class Tampering:
    """A transport between the server and the clients that can drop or rewrite replies."""

    def __init__(self, inner: Transport, tamper: Tamper) -> None:
        self.inner, self.tamper = inner, tamper

    def exchange(self, messages: Mapping[str, Message]) -> Iterator[Reply]:
        for cid, reply in self.inner.exchange(messages):
            if isinstance(reply, Message):
                changed = self.tamper(cid, messages[cid], reply)
                if changed is not None:
                    yield cid, changed
                    continue
            yield cid, reply


def _experiment(tmp: Path, *overrides: str) -> Experiment:
    return Experiment(load_config(None, [*BASE, f"output_dir={tmp}", *overrides]))


def _handlers(exp: Experiment) -> dict[str, SecureClientHandler]:
    transport: Any = exp.server.transport
    while isinstance(transport, Tampering):
        transport = transport.inner
    return dict(transport.handlers)


def _phase(exp: Experiment) -> SecureRound:
    assert isinstance(exp.server.phase, SecureRound)
    return exp.server.phase


def _plain_sum(exp: Experiment, ids: list[str]) -> np.ndarray:
    bits = _phase(exp).codec.bits
    total = sum(_handlers(exp)[cid].last_input.astype(object) for cid in ids)  # type: ignore[union-attr]
    return np.asarray(total % (1 << bits), dtype=np.uint64)


def _weights(result: RunResult) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in result.model.parameters()])


def _stage(message: Message) -> str:
    return str(message.meta.get("stage", "fit"))


def test_one_round_equals_fedavg_on_the_quantization_grid(tmp_path: Path) -> None:
    # weights up to 1000 >= every client's example count: FedAvg's weights exactly
    fine = [*SECURE, "secure.quant_bits=16", "secure.clip=2.0", "secure.max_weight=1000"]
    exp = _experiment(tmp_path / "s", "rounds=1", *fine)
    secure = exp.run()
    plain = _experiment(tmp_path / "p", "rounds=1").run()
    # the masked sum is exactly the sum of the clients' integer vectors
    result = _phase(exp).last_sum
    assert result is not None and len(result.survivors) == 8 and not result.dropped
    assert np.array_equal(result.total, _plain_sum(exp, [str(k) for k in range(8)]))
    # each coordinate of the mean is off by less than one quantization step
    step = 2.0 / levels(16)
    gap = (_weights(secure) - _weights(plain)).abs().max().item()
    assert 0 < gap < step
    line, base = secure.metrics[0], plain.metrics[0]
    assert line["train_loss"] == pytest.approx(base["train_loss"], abs=10.0 / levels(16))
    assert line["num_clients"] == 8 and line["secure_survivors"] == 8
    # bytes: every client's masked vector up, and more down than the plain fit messages
    bits, length = _phase(exp).codec.bits, _phase(exp).codec.length
    assert line["bytes_up"] > 8 * packed_size(length, bits)
    assert line["bytes_down"] > base["bytes_down"]


def test_accuracy_matches_plain_fedavg(tmp_path: Path) -> None:
    rounds = ["rounds=6", "eval_every=6"]
    # logreg's updates reach 0.6 per coordinate at this lr; 8 bits: steps of 0.5/127
    secure = _experiment(tmp_path / "s", *rounds, *SECURE, "secure.clip=0.5").run()
    plain = _experiment(tmp_path / "p", *rounds).run()
    acc, base = secure.summary["final_test_accuracy"], plain.summary["final_test_accuracy"]
    assert base > 0.85
    assert abs(acc - base) <= 0.005


def _drop_at(stage: str, ids: set[str], rnd: int = 1) -> Tamper:
    def tamper(cid: str, sent: Message, reply: Message) -> Failure | None:
        if cid in ids and sent.round == rnd and _stage(sent) == stage:
            return Failure(cid, "dropped out (test)")
        return None

    return tamper


def test_dropouts_after_the_masked_input_up_to_k_minus_t_are_recovered(tmp_path: Path) -> None:
    exp = _experiment(tmp_path, "rounds=1", *SECURE)
    assert exp.parts.notes["secure"]["threshold"] == 4  # n = 8: k = 7 (complete), t = 4
    # a client's shares sit with its k = n - 1 neighbours: k - t = 3 may go silent
    dropped = {"1", "3", "5"}
    exp.server.transport = Tampering(exp.server.transport, _drop_at(wire.UNMASK, dropped))
    line = exp.run().metrics[0]
    assert line["secure_aborted"] is None
    assert line["secure_survivors"] == 8 and line["secure_recovered"] == 3
    assert line["num_clients"] == 8 and line["num_failed"] == 0
    result = _phase(exp).last_sum
    assert result is not None
    assert np.array_equal(result.total, _plain_sum(exp, [str(k) for k in range(8)]))


def test_dropouts_before_the_masked_input_leave_the_sum_of_the_rest(tmp_path: Path) -> None:
    exp = _experiment(tmp_path, "rounds=1", *SECURE)
    exp.server.transport = Tampering(exp.server.transport, _drop_at(wire.MASK, {"0", "7"}))
    line = exp.run().metrics[0]
    assert line["secure_survivors"] == 6 and line["secure_dropped"] == 2
    assert line["num_clients"] == 6 and line["num_failed"] == 2
    result = _phase(exp).last_sum
    assert result is not None
    assert np.array_equal(result.total, _plain_sum(exp, [str(k) for k in range(1, 7)]))


def test_an_unrecoverable_round_fails_cleanly_and_the_next_goes_on(tmp_path: Path) -> None:
    exp = _experiment(tmp_path, "rounds=2", *SECURE)
    too_many = {"0", "1", "2", "3"}  # k - t + 1: 4 answers, 3 of them hold 4's shares
    exp.server.transport = Tampering(exp.server.transport, _drop_at(wire.UNMASK, too_many))
    before = {n: t.clone() for n, t in exp.server.global_state.items()}
    first = exp.server.run_round(1)
    assert first["secure_aborted"] and "aborted" in first["secure_aborted"]
    assert first["num_clients"] == 0 and first["train_loss"] is None
    assert all(torch.equal(before[n], t) for n, t in exp.server.global_state.items())
    second = exp.server.run_round(2)
    assert second["secure_aborted"] is None and second["num_clients"] == 8
    assert not all(torch.equal(before[n], t) for n, t in exp.server.global_state.items())


def test_replayed_and_forged_stage_messages_are_rejected(tmp_path: Path) -> None:
    # four of eight misbehave; threshold 3 lets the other four still finish the round
    exp = _experiment(tmp_path, "rounds=1", *SECURE, "secure.threshold=3")
    earlier: dict[str, Message] = {}

    def tamper(cid: str, sent: Message, reply: Message) -> Message | None:
        stage = _stage(sent)
        if stage == "fit":
            earlier[cid] = reply
        if cid == "2" and stage == wire.SHARE:  # replays its stage-1 answer
            return earlier[cid]
        if cid == "3" and stage == wire.MASK:  # forges a masked input in 5's name
            masked = wire.decode(bytes(reply.payload))
            forged = dataclasses.replace(masked, sender=5)  # type: ignore[type-var]
            return dataclasses.replace(reply, payload=wire.encode(forged))
        if cid == "4" and stage == wire.MASK:  # a stale round number on the envelope
            return dataclasses.replace(reply, round=0)
        if cid == "6" and stage == wire.SHARE:  # garbage instead of a stage message
            return dataclasses.replace(reply, payload=b"\x00\x00\x00\x05{}}}}")
        return None

    exp.server.transport = Tampering(exp.server.transport, tamper)
    line = exp.run().metrics[0]
    assert line["num_rejected"] == 4 and line["secure_aborted"] is None
    honest = ["0", "1", "5", "7"]
    assert line["secure_survivors"] == 4
    result = _phase(exp).last_sum
    assert result is not None
    assert np.array_equal(result.total, _plain_sum(exp, honest))


def test_simulated_device_dropouts(tmp_path: Path) -> None:
    exp = _experiment(
        tmp_path, "rounds=2", *SECURE, "devices.enabled=true", "devices.dropout=0.15", "seed=3"
    )
    result = exp.run()
    failed = [m["num_failed"] for m in result.metrics]
    assert sum(failed) > 0
    for m in result.metrics:
        assert m["secure_aborted"] is None
        assert m["num_clients"] == 8 - m["num_failed"]


@pytest.mark.parametrize(
    ("overrides", "both"),
    [
        (["strategy.aggregator=median"], ("strategy.aggregator=median", "secure.mode=secagg")),
        (["strategy.aggregator=krum"], ("strategy.aggregator=krum", "secure.mode=secagg")),
        (["compression.up=topk:0.1"], ("compression.up=topk:0.1", "secure.mode=secagg")),
        (["compression.up=randk:0.1"], ("compression.up=randk:0.1", "secure.mode=secagg")),
        (
            ["privacy.mode=central", "privacy.noise_multiplier=1"],
            ("privacy.mode=central", "secure.mode=secagg"),
        ),
        (["eval.client_fraction=0.2"], ("eval.client_fraction=0.2", "secure.mode=secagg")),
        (
            ["privacy.mode=local", "privacy.noise_multiplier=1"],
            ("privacy.mode=local", "secure.mode=secagg"),
        ),
        (["strategy.name=scaffold"], ("strategy.name=scaffold", "secure.mode=secagg")),
        (["secure.bits=10"], ("secure.bits=10", "clients.per_round=8")),
        (["secure.neighbors=8"], ("secure.neighbors=8", "clients.per_round=8")),
        (
            ["privacy.mode=distributed", "privacy.noise_multiplier=1", "secure.max_weight=5"],
            ("privacy.mode=distributed", "secure.max_weight=5"),
        ),
    ],
)
def test_config_refuses_what_needs_individual_updates(
    overrides: list[str], both: tuple[str, str]
) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, [*BASE, *SECURE, *overrides])
    assert any(both[0] in p and both[1] in p for p in error.value.problems), error.value


def test_distributed_dp_needs_secagg() -> None:
    with pytest.raises(ConfigError, match="privacy.mode=distributed.*secure.mode=secagg"):
        load_config(None, [*BASE, "privacy.mode=distributed", "privacy.noise_multiplier=1"])


def test_automatic_modulus_and_an_explicit_safe_one() -> None:
    cfg = load_config(None, [*BASE, *SECURE, "secure.bits=12"])
    assert cfg.secure.bits == 12
    with pytest.raises(ConfigError, match="secure.threshold"):
        load_config(None, [*BASE, *SECURE, "secure.neighbors=4", "secure.threshold=5"])


def test_a_resumed_secure_run_ends_with_the_same_model(tmp_path: Path) -> None:
    """Masks are fresh every round but cancel exactly; everything else is seeded."""
    whole = _experiment(tmp_path / "whole", "rounds=2", *SECURE, "secure.clip=0.5").run()
    _experiment(tmp_path / "cut", "rounds=1", *SECURE, "secure.clip=0.5").run()
    resumed = resume(tmp_path / "cut", ["rounds=2"]).run()
    assert torch.equal(_weights(whole), _weights(resumed))
