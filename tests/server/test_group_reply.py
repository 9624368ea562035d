"""A group reply: every row checked as one reply is, a bad row rejected alone, the good
rows aggregated to the same weighted mean as one ``add`` per client."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import torch

from fedloom.compression.codec import RawCodec
from fedloom.core.message import Message
from fedloom.experiment import Experiment  # noqa: F401  (registers the strategies)
from fedloom.server.aggregate import WeightedSum
from fedloom.server.group_reply import GroupReply
from fedloom.server.rows import UpdateRows, add_rows
from fedloom.server.sampler import UniformSampler
from fedloom.server.server import Server
from fedloom.server.strategy import SampleWeightedMean, StrategyConfig, build_strategy
from fedloom.server.weights import CappedClaims, FixedWeights, Weighting
from fedloom.transport.base import Reply
from fedloom.transport.wire import frame_size

CODEC = RawCodec()
IDS = ["0", "1", "2", "3", "4", "5"]


class GroupOnly:
    """A transport that answers every round with one prepared group reply."""

    def __init__(self, make: Any) -> None:
        self.make = make

    def exchange(self, messages: Mapping[str, Message]) -> Iterator[Reply]:
        raise AssertionError("the server must ask for group replies")

    def exchange_grouped(self, messages: Mapping[str, Message]) -> Iterator[Reply | GroupReply]:
        yield self.make(next(iter(messages.values())).round)


def meta(n: int, loss: float = 0.5) -> dict[str, Any]:
    return {"num_examples": n, "train_loss": loss, "steps": 1}


def server(make: Any, weighting: Weighting, **kwargs: Any) -> Server:
    return Server(
        global_state={"w": torch.zeros(2, 3)},
        client_ids=IDS,
        strategy=build_strategy(StrategyConfig()),
        sampler=UniformSampler(len(IDS), len(IDS), seed=0),
        transport=GroupOnly(make),  # type: ignore[arg-type]
        down=CODEC,
        up=CODEC,
        weighting=weighting,
        **kwargs,
    )


def rows(values: list[float]) -> torch.Tensor:
    return torch.stack([torch.full((2, 3), v) for v in values])


def hostile_group(rnd: int) -> GroupReply:
    """Rows 0 and 3 are good; 1 holds a NaN, 2 a value beyond 1e30, 4 claims 0
    examples, 5 an infinite loss."""
    updates = rows([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    updates[1, 0, 1] = float("nan")
    updates[2, 1, 2] = 1e31
    metas = [meta(10), meta(10), meta(10), meta(30), meta(0), meta(10, float("inf"))]
    size = len(CODEC.encode({"w": updates[0]}))
    return GroupReply(rnd, IDS, {"w": updates}, metas, "none", size)


@pytest.mark.parametrize(
    "weighting",
    [CappedClaims(10.0), FixedWeights(dict.fromkeys(IDS, 10) | {"3": 30})],
    ids=["claims-one-by-one", "server-sizes-batched"],
)
def test_each_bad_row_is_rejected_alone_and_the_rest_averaged(weighting, caplog) -> None:
    seen: list[tuple[str, float]] = []
    s = server(hostile_group, weighting)
    s.update_observers.append(lambda rnd, cid, update: seen.append((cid, float(update["w"][0, 0]))))
    with caplog.at_level(logging.WARNING):
        line = s.run_round(1)
    # (10·1 + 30·4) / 40 = 3.25: FedAvg's server step (SGD, lr 1) adds the mean to 0
    torch.testing.assert_close(s.global_state["w"], torch.full((2, 3), 3.25), atol=1e-6, rtol=0)
    assert line["num_clients"] == 2 and line["num_rejected"] == 4
    assert seen == [("0", 1.0), ("3", 4.0)]
    text = caplog.text
    assert "w: contains NaN" in text and "values beyond ±1e+30" in text
    assert "num_examples must be an integer in [1, 1000000000], got 0" in text
    assert "train_loss must be a finite number" in text
    # every row's bytes as the client's own frame would count them
    group = hostile_group(1)
    expected = sum(
        frame_size(Message("fit_result", 1, cid, CODEC.encode({"w": group.updates["w"][i]}), m))
        for i, (cid, m) in enumerate(zip(IDS, group.metas, strict=True))
    )
    assert line["bytes_up"] == expected


def test_a_group_with_the_wrong_shape_or_round_is_rejected_row_by_row(caplog) -> None:
    def wrong_shape(rnd: int) -> GroupReply:
        updates = torch.ones(2, 3, 2)  # (rows, 3, 2): the model's w is (2, 3)
        return GroupReply(rnd, ["0", "1"], {"w": updates}, [meta(5), meta(5)], "none", 100)

    def wrong_round(rnd: int) -> GroupReply:
        return GroupReply(rnd + 1, ["2"], {"w": rows([1.0])}, [meta(5)], "none", 100)

    def no_tensors(rnd: int) -> GroupReply:
        return GroupReply(rnd, ["3", "4"], {}, [meta(5), meta(5)], "none", 100)

    def too_few_rows(rnd: int) -> GroupReply:
        return GroupReply(rnd, ["3", "4", "5"], {"w": rows([1.0, 2.0])}, [meta(5)] * 3, "none", 1)

    cases = [
        (wrong_shape, "w: shape (3, 2) != (2, 3)"),
        (wrong_round, "round 2"),
        (no_tensors, "tensor names differ: missing ['w']"),
        (too_few_rows, "w: 2 rows for 3 clients"),
    ]
    for make, why in cases:
        s = server(make, FixedWeights(None))
        with caplog.at_level(logging.WARNING):
            line = s.run_round(1)
        assert line["num_clients"] == 0 and line["num_rejected"] == len(make(1).client_ids)
        assert why in caplog.text
        assert torch.equal(s.global_state["w"], torch.zeros(2, 3))  # nothing applied


def test_a_group_reply_over_the_byte_limit_is_rejected(caplog) -> None:
    def large(rnd: int) -> GroupReply:
        return GroupReply(rnd, ["0"], {"w": rows([1.0])}, [meta(5)], "none", 10_000)

    s = server(large, FixedWeights(None), max_update_bytes=5_000)
    with caplog.at_level(logging.WARNING):
        assert s.run_round(1)["num_rejected"] == 1
    assert "exceeds the limit of 5000" in caplog.text


def test_weighted_sum_of_rows_equals_one_add_per_row() -> None:
    gen = torch.Generator().manual_seed(0)
    stacked = {"a": torch.randn(7, 4, 3, generator=gen), "b": torch.randn(7, 5, generator=gen)}
    weights = [3.0, 1.0, 50.0, 7.0, 2.0, 9.0, 11.0]
    one, batched = WeightedSum(), WeightedSum()
    for i, w in enumerate(weights):
        one.add({n: t[i] for n, t in stacked.items()}, w)
    batched.add_rows(stacked, weights)
    assert batched.count == one.count == 7 and batched.weight == one.weight == 83.0
    for name, value in one.mean().items():
        torch.testing.assert_close(batched.mean()[name], value, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="finite and >= 0"):
        WeightedSum().add_rows(stacked, [1.0, -1.0, 1, 1, 1, 1, 1])


def test_a_subclass_that_overrides_add_alone_gets_one_add_per_row() -> None:
    class Unweighted(SampleWeightedMean):
        def add(self, client_id, update, meta) -> None:
            self.sum.add(update, 1.0)  # every client counts once, whatever it claims

    stacked = UpdateRows(["a", "b"], {"w": rows([1.0, 4.0])}, [meta(10), meta(30)])
    plain, unweighted = SampleWeightedMean(), Unweighted()
    assert add_rows(plain, stacked) == [] and add_rows(unweighted, stacked) == []
    assert torch.equal(plain.result()["w"], torch.full((2, 3), 3.25))  # (10 + 120) / 40
    assert torch.equal(unweighted.result()["w"], torch.full((2, 3), 2.5))  # (1 + 4) / 2


def test_a_group_reply_needs_one_meta_per_client() -> None:
    with pytest.raises(ValueError, match="1 metas for 2 clients"):
        GroupReply(1, ["0", "1"], {"w": rows([1.0, 2.0])}, [meta(5)], "none", 100)
