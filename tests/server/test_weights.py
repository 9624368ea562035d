"""No client controls its weight: bad meta is rejected, claims are capped or ignored."""

import json
import logging
from collections.abc import Mapping
from typing import Any

import pytest
import torch

from fedloom.compression.codec import RawCodec
from fedloom.config import load_config
from fedloom.core.errors import ConfigError, UpdateRejected
from fedloom.core.message import Message
from fedloom.experiment import Experiment  # registers every strategy and robust rule
from fedloom.server.aggregate import WeightedSum
from fedloom.server.sampler import UniformSampler
from fedloom.server.server import Server
from fedloom.server.strategy import StrategyConfig, build_strategy
from fedloom.server.weights import (
    CappedClaims,
    FixedWeights,
    Weighting,
    capped_weights,
    load_sizes,
    weighting_for,
)
from fedloom.transport.inprocess import InProcessTransport

CODEC = RawCodec()
BAD_META: list[dict[str, Any]] = [
    {"num_examples": "abc"},
    {"num_examples": float("nan")},
    {"num_examples": float("inf")},
    {"num_examples": 10**400},
    {"num_examples": 10**12},
    {"num_examples": -1},
    {"num_examples": 0},
    {"num_examples": True},
    {"num_examples": 1.5},
    {"num_examples": None},
    {"num_examples": 5, "train_loss": "abc"},
    {"num_examples": 5, "train_loss": float("nan")},
    {"num_examples": 5, "train_loss": float("inf")},
    {"num_examples": 5, "train_loss": 10**400},
    {"num_examples": 5, "train_loss": True},
]


def answering(cid: str, value: float, meta: Mapping[str, Any]):
    """Client ``cid``: always the update ``[value, value]`` with ``meta``."""

    def handle(message: Message) -> Message:
        update = CODEC.encode({"w": torch.full((2,), value)})
        return Message("fit_result", message.round, cid, update, dict(meta))

    return handle


def server_with(clients: dict[str, tuple[float, Mapping[str, Any]]], **kwargs: Any) -> Server:
    return Server(
        global_state={"w": torch.zeros(2)},
        client_ids=list(clients),
        strategy=build_strategy(StrategyConfig(**kwargs.pop("strategy", {}))),
        sampler=UniformSampler(len(clients), len(clients), seed=0),
        transport=InProcessTransport({c: answering(c, *vm) for c, vm in clients.items()}),
        down=CODEC,
        up=CODEC,
        **kwargs,
    )


def test_capped_weights_by_hand():
    # median 20, ratio 2: cap 40
    assert capped_weights([10, 20, 10**12], 2.0) == [10.0, 20.0, 40.0]
    # even count: the lower median 20, cap 20 (ratio 1)
    assert capped_weights([10, 20, 30, 1000], 1.0) == [10.0, 20.0, 20.0, 20.0]
    assert capped_weights([7], 2.0) == [7.0]
    assert capped_weights([], 2.0) == []
    with pytest.raises(ValueError, match=">= 1"):
        capped_weights([1], 0.5)


def test_float64_sum_does_not_overflow_float32():
    acc = WeightedSum()
    big = torch.full((2,), 1e30)  # 1e30 * 1e9 = 1e39 > float32's max 3.4e38
    acc.add({"w": big}, 1e9)
    acc.add({"w": big}, 1e9)
    mean = acc.mean()["w"]
    assert mean.dtype == torch.float32 and torch.equal(mean, big)


def test_float64_sum_keeps_each_tensors_dtype():
    acc = WeightedSum()
    acc.add({"a": torch.ones(2), "h": torch.ones(2, dtype=torch.float16)}, 3.0)
    assert acc.total["a"].dtype == torch.float32 and acc.total["h"].dtype == torch.float16
    assert torch.equal(acc.total["a"], torch.full((2,), 3.0))


@pytest.mark.parametrize("meta", BAD_META, ids=[repr(m)[:60] for m in BAD_META])
def test_the_round_loop_rejects_bad_meta_and_keeps_the_honest_mean(meta):
    server = server_with({"0": (1.0, {"num_examples": 10, "train_loss": 0.5}),
                          "1": (4.0, {"num_examples": 30, "train_loss": 1.5}),
                          "2": (1000.0, meta)})  # fmt: skip
    for rnd in (1, 2):  # the server keeps running, round after round
        metrics = server.run_round(rnd)
        assert metrics["num_rejected"] == 1 and metrics["num_clients"] == 2
    # claims capped at twice the lower median (10): weights 10 and 20, so each round adds
    # (10*1 + 20*4) / 30 = 3; the loss metric is the plain mean under claimed weights
    assert torch.equal(server.global_state["w"], torch.full((2,), 6.0))
    assert metrics["train_loss"] == pytest.approx((0.5 + 1.5) / 2)


def test_a_repeated_rejection_is_logged_once_per_client(caplog):
    server = server_with({"0": (1.0, {"num_examples": 10}), "1": (2.0, {"num_examples": "x"})})
    with caplog.at_level(logging.WARNING, logger="fedloom.server.server"):
        for rnd in (1, 2, 3):
            assert server.run_round(rnd)["num_rejected"] == 1
    warnings = [r for r in caplog.records if "rejected update from client 1" in r.getMessage()]
    assert len(warnings) == 1


def test_claimed_weights_are_capped_at_twice_the_median():
    # claims 10, 20, 10**9 (the largest legal claim): median 20, weights 10, 20, 40
    server = server_with(
        {
            "0": (1.0, {"num_examples": 10}),
            "1": (2.0, {"num_examples": 20}),
            "2": (100.0, {"num_examples": 10**9}),
        },  # fmt: skip
        weighting=CappedClaims(2.0),
    )
    server.run_round(1)
    expected = (10 * 1.0 + 20 * 2.0 + 40 * 100.0) / 70
    assert torch.allclose(server.global_state["w"], torch.full((2,), expected))
    # uncapped, the claim would have owned the mean: about 100
    assert server.global_state["w"][0].item() < 60


def test_a_claim_above_the_maximum_is_rejected_not_capped():
    server = server_with(
        {
            "0": (1.0, {"num_examples": 10}),
            "1": (2.0, {"num_examples": 20}),
            "2": (100.0, {"num_examples": 10**12}),
        },  # fmt: skip
        weighting=CappedClaims(2.0),
    )
    assert server.run_round(1)["num_rejected"] == 1
    assert torch.allclose(server.global_state["w"], torch.full((2,), (10 + 40) / 30))


def test_server_known_sizes_ignore_the_claim():
    server = server_with(
        {
            "0": (1.0, {"num_examples": 10**9}),
            "1": (2.0, {"num_examples": 1}),
            "2": (4.0, {"num_examples": 7}),
        },  # fmt: skip
        weighting=FixedWeights({"0": 10, "1": 30, "2": 60}),
    )
    server.run_round(1)
    assert torch.allclose(server.global_state["w"], torch.full((2,), 0.1 + 0.6 + 2.4))


def test_a_client_the_server_has_no_size_for_is_rejected():
    server = server_with(
        {"0": (1.0, {"num_examples": 10}), "1": (2.0, {"num_examples": 10})},
        weighting=FixedWeights({"0": 10}),
    )
    metrics = server.run_round(1)
    assert metrics["num_rejected"] == 1
    assert torch.equal(server.global_state["w"], torch.ones(2))


def test_uniform_weights():
    server = server_with(
        {"0": (1.0, {"num_examples": 10**9}), "1": (2.0, {"num_examples": 1})},
        weighting=FixedWeights(None),
    )
    server.run_round(1)
    assert torch.equal(server.global_state["w"], torch.full((2,), 1.5))


def test_capped_claims_reach_a_robust_rule_too():
    # norm_bound: every update has norm <= 10, so the result is the capped weighted mean
    server = server_with(
        {
            "0": (1.0, {"num_examples": 10}),
            "1": (2.0, {"num_examples": 20}),
            "2": (3.0, {"num_examples": 10**9}),
        },  # fmt: skip
        weighting=CappedClaims(2.0),
        strategy={"aggregator": "norm_bound", "norm_bound": 10.0},
    )
    server.run_round(1)
    expected = (10 * 1.0 + 20 * 2.0 + 40 * 3.0) / 70
    assert torch.allclose(server.global_state["w"], torch.full((2,), expected))


def test_fednova_rejects_a_bad_step_count_in_the_round_loop():
    for bad in ["abc", float("nan"), float("inf"), 10**400, True, 0, -3, 1e13]:
        server = server_with(
            {
                "0": (1.0, {"num_examples": 10, "steps": 2}),
                "1": (5.0, {"num_examples": 10, "steps": bad}),
            },  # fmt: skip
            strategy={"name": "fednova"},
            weighting=FixedWeights(None),
        )
        assert server.run_round(1)["num_rejected"] == 1
        assert torch.equal(server.global_state["w"], torch.ones(2))


def test_weighting_for_each_policy_and_privacy_mode(tmp_path):
    sizes = {"0": 10, "1": 30}

    def kind(w: Weighting) -> str:
        if isinstance(w, CappedClaims):
            return f"capped {w.ratio:g}"
        assert isinstance(w, FixedWeights)
        return "uniform" if w.sizes is None else f"sizes {w.sizes}"

    assert kind(weighting_for("server", sizes=sizes)) == "sizes {'0': 10, '1': 30}"
    assert kind(weighting_for("claimed", sizes=sizes, max_ratio=3)) == "capped 3"
    assert kind(weighting_for("uniform", sizes=sizes)) == "uniform"
    for policy in ("server", "claimed", "uniform"):  # DP-FedAvg: uniform
        assert kind(weighting_for(policy, sizes=sizes, privacy_mode="central")) == "uniform"
        assert kind(weighting_for(policy, sizes=sizes, privacy_mode="local")) == "uniform"
    assert kind(weighting_for("claimed", sizes=sizes, privacy_mode="dpsgd")) == "uniform"
    assert kind(weighting_for("server", sizes=sizes, privacy_mode="dpsgd")).startswith("sizes")
    table = tmp_path / "sizes.json"
    table.write_text(json.dumps({"0": 5, "1": 7}))
    assert kind(weighting_for("server", sizes=sizes, sizes_file=str(table))) == (
        "sizes {'0': 5, '1': 7}"
    )


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ("not json", "is not JSON"),
        (json.dumps([1, 2]), "must map client ids"),
        (json.dumps({"0": 0}), "must map client ids"),
        (json.dumps({"0": True}), "must map client ids"),
        (json.dumps({"0": 10**12}), "must map client ids"),
        (json.dumps({"0": 3, "9": 4}), "not in the run"),
    ],
)
def test_bad_sizes_files_are_config_errors(tmp_path, doc, reason):
    path = tmp_path / "sizes.json"
    path.write_text(doc)
    with pytest.raises(ConfigError, match=reason):
        load_sizes(path, ["0", "1"])
    with pytest.raises(ConfigError, match="cannot read"):
        load_sizes(tmp_path / "missing.json", ["0"])


def test_weight_keys_are_validated():
    with pytest.raises(ConfigError, match="max_weight_ratio"):
        load_config(None, ["network.max_weight_ratio=0.5"])
    with pytest.raises(ConfigError, match="client_weights"):
        load_config(None, ["network.client_weights=mine"])
    with pytest.raises(ValueError, match=">= 1"):
        CappedClaims(0.9)
    with pytest.raises(UpdateRejected, match="no data size"):
        FixedWeights({}).weight("3")


SMALL = ["rounds=1", "model.name=logreg", "clients.num=4", "clients.per_round=4"]


def final_state(tmp_path, name: str, extra: list[str], claim: int | None) -> dict:
    cfg = load_config(None, [*SMALL, *extra, f"output_dir={tmp_path / name}"])
    experiment = Experiment(cfg)
    if claim is not None:

        def lie(update, ctx):
            if ctx.client_id == "1":
                ctx.meta["num_examples"] = claim
            return update

        for client in experiment.clients.values():
            client.hooks.append(lie)
    experiment.run()
    return experiment.server.global_state


def test_in_simulation_the_server_uses_its_own_sizes(tmp_path):
    honest = final_state(tmp_path, "honest", [], None)
    lying = final_state(tmp_path, "lying", [], 10**9)
    assert all(torch.equal(honest[n], lying[n]) for n in honest)  # the claim is ignored
    claimed = final_state(tmp_path, "claimed", ["network.client_weights=claimed"], 10**9)
    assert not all(torch.equal(honest[n], claimed[n]) for n in honest)  # the claim counts


def test_fednova_normalizer_is_bounded_by_the_planned_steps():
    from fedloom.algorithms.fednova import planned_normalizer_check, step_normalizer
    from fedloom.client.trainer import TrainConfig

    # 25 examples, batches of 10, one epoch: 3 planned steps
    check = planned_normalizer_check(TrainConfig(batch_size=10, momentum=0.0), {"a": 25})
    check("a", {"num_examples": 1, "steps": 3})  # the server's size counts, not the claim
    check("a", {"num_examples": 1, "steps": 2})  # a device budget may cut steps short
    with pytest.raises(UpdateRejected, match="3 local steps planned for this client"):
        check("a", {"num_examples": 25, "steps": 4})
    with pytest.raises(UpdateRejected, match="step count"):
        check("a", {"num_examples": 25, "steps": float("nan")})
    momentum = planned_normalizer_check(TrainConfig(batch_size=10, momentum=0.9), None)
    most = step_normalizer(3, 0.9)  # claimed sizes: the (validated) claim of 25
    momentum("b", {"num_examples": 25, "fednova_a": most})
    with pytest.raises(UpdateRejected, match="exceeds"):
        momentum("b", {"num_examples": 25, "fednova_a": most * 1.01})


def test_a_networked_server_reads_its_sizes_file(tmp_path):
    tokens, sizes = tmp_path / "tokens.json", tmp_path / "sizes.json"
    tokens.write_text(json.dumps({str(k): f"token-{k}-0123456789abcdef" for k in range(4)}))
    sizes.write_text(json.dumps({"0": 5, "1": 6, "2": 7, "3": 8}))
    net = ["network.mode=grpc", f"network.tokens_file={tokens}"]
    cfg = load_config(
        None, [*SMALL, *net, f"network.client_sizes_file={sizes}", f"output_dir={tmp_path}/r"]
    )
    weighting = Experiment(cfg).server.weighting
    assert isinstance(weighting, FixedWeights) and weighting.sizes == {
        "0": 5,
        "1": 6,
        "2": 7,
        "3": 8,
    }
    # a client process builds the same federation in simulation: it never reads the file
    local = cfg.model_copy(
        update={"network": cfg.network.model_copy(update={"mode": "simulation"})}
    )
    sizes.unlink()
    weighting = Experiment(local).server.weighting
    assert isinstance(weighting, FixedWeights) and weighting.sizes is not None
    assert sum(weighting.sizes.values()) > 26  # the partition sizes of the digits data


def test_with_two_claims_the_attackers_own_cannot_lift_the_cap():
    # the mean of the two middle claims would be 5e11: the lower median keeps the cap at 20
    assert capped_weights([10, 10**12], 2.0) == [10.0, 20.0]
    assert capped_weights([10**12, 10, 30, 50], 2.0) == [60.0, 10.0, 30.0, 50.0]


def test_fednova_refuses_claimed_weights_at_config_time(tmp_path):
    overrides = ["strategy.name=fednova", "network.client_weights=claimed", "model.name=logreg"]
    with pytest.raises(ConfigError, match="fednova cannot be combined with network.client_wei"):
        Experiment(load_config(None, [*overrides, f"output_dir={tmp_path / 'run'}"]))
