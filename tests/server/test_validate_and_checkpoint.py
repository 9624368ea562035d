import pytest
import torch

from fedloom.compression.codec import RawCodec
from fedloom.core.errors import UpdateRejected
from fedloom.core.message import Message
from fedloom.server.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fedloom.server.validate import UpdateSpec, check_update

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
    assert [p.name for p in tmp_path.glob("tensors-*")] == ["tensors-000002.safetensors"]
    assert not list(tmp_path.glob(".*tmp"))
