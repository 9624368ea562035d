import json

import pytest
import torch

from fedloom.compression.codec import RawCodec
from fedloom.core.errors import UpdateRejected
from fedloom.core.message import Message
from fedloom.server.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fedloom.server.validate import MAX_EXAMPLES, ReplyMeta, UpdateSpec, check_meta, check_update

CODEC = RawCodec()
STATE = {"w": torch.zeros(2, 3), "b": torch.zeros(3)}
SPEC = UpdateSpec.of(STATE, max_bytes=10_000)


def reply(tensors=None, rnd=2, sender="a", meta=None, payload=None):
    tensors = tensors if tensors is not None else {"w": torch.ones(2, 3), "b": torch.ones(3)}
    body = payload if payload is not None else CODEC.encode(tensors)
    return Message("fit_result", rnd, sender, body, {"num_examples": 5} if meta is None else meta)


def test_a_good_update_passes():
    update = check_update(reply(), 2, "a", SPEC, CODEC)
    assert torch.equal(update["w"], torch.ones(2, 3))


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (reply(rnd=1), "round 1"),
        (reply(sender="b"), "signed by"),
        (reply(meta={"num_examples": 0}), "num_examples"),
        (reply(meta={}), "num_examples"),
        (reply(payload=b"garbage"), "safetensors"),
        (reply({"w": torch.ones(2, 3)}), "missing ['b']"),
        (reply({"w": torch.ones(3, 2), "b": torch.ones(3)}), "shape"),
        (reply({"w": torch.ones(2, 3, dtype=torch.float64), "b": torch.ones(3)}), "dtype"),
        (reply({"w": torch.full((2, 3), float("nan")), "b": torch.ones(3)}), "NaN"),
        (reply({"w": torch.ones(2, 3), "b": torch.ones(3), "z": torch.ones(1)}), "unexpected"),
        (reply({"w": torch.ones(200, 30), "b": torch.ones(3)}), "exceeds"),
    ],
)
def test_bad_updates_are_rejected_with_a_reason(message, reason):
    with pytest.raises(UpdateRejected, match=reason.replace("[", r"\[").replace("]", r"\]")):
        check_update(message, 2, "a", SPEC, CODEC)


def test_checkpoint_round_trip_and_old_tensor_files_removed(tmp_path):
    for rnd in (1, 2):
        save_checkpoint(
            tmp_path,
            Checkpoint(
                round=rnd,
                global_state={"w": torch.full((2,), float(rnd))},
                strategy_tensors={"0.momentum_buffer": torch.ones(2)},
                strategy_rest={"param_groups": [{"lr": 1.0}]},
                client_states={"7": {"residual": torch.arange(3.0)}},
                extra={"epsilon": 0.5},
            ),
        )
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.round == 2
    assert torch.equal(ckpt.global_state["w"], torch.full((2,), 2.0))
    assert torch.equal(ckpt.client_states["7"]["residual"], torch.arange(3.0))
    assert ckpt.strategy_rest == {"param_groups": [{"lr": 1.0}]}
    assert ckpt.extra == {"epsilon": 0.5}
    # two slots rewritten in turn: round 2 went to the one round 1's state did not name
    assert sorted(p.name for p in tmp_path.glob("tensors-*")) == [
        "tensors-a.safetensors",
        "tensors-b.safetensors",
    ]
    assert json.loads((tmp_path / "state.json").read_text())["tensors"] == "tensors-b.safetensors"
    assert not list(tmp_path.glob(".*tmp"))


BAD_VALUES = ["abc", float("nan"), float("inf"), -float("inf"), 10**400, -1, True, 1.5, None]


@pytest.mark.parametrize("value", [*BAD_VALUES, 0, False, 10**9 + 1, [5], {"n": 5}])
def test_num_examples_must_be_an_int_in_range(value):
    with pytest.raises(UpdateRejected, match="num_examples must be an integer in"):
        check_update(reply(meta={"num_examples": value}), 2, "a", SPEC, CODEC)


@pytest.mark.parametrize(
    "value", [*(v for v in BAD_VALUES if v is not None and v not in (-1, 1.5)), 1e308, -1e31]
)
def test_train_loss_must_be_a_finite_number(value):
    with pytest.raises(UpdateRejected, match="train_loss must be"):
        check_update(reply(meta={"num_examples": 5, "train_loss": value}), 2, "a", SPEC, CODEC)


def test_valid_meta_values_are_returned_checked():
    assert check_meta({"num_examples": 10**9, "train_loss": 2}) == ReplyMeta(10**9, 2.0)
    assert check_meta({"num_examples": 1, "train_loss": -0.5}) == ReplyMeta(1, -0.5)
    assert check_meta({"num_examples": 3}) == ReplyMeta(3, None)
    assert check_meta({"num_examples": 3, "train_loss": None}) == ReplyMeta(3, None)
    assert MAX_EXAMPLES == 10**9


def test_a_huge_value_is_shown_shortened():
    with pytest.raises(UpdateRejected) as caught:
        check_meta({"num_examples": 10**400})
    assert len(str(caught.value)) < 120 and "..." in str(caught.value)
