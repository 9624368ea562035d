"""Deep Gradient Compression's corrections and the density warm-up, on hand-computed cases."""

import json
import struct

import pytest
import torch

from fedloom.compression.blob import SpecCodec
from fedloom.compression.dgc import (
    NORM_KEY,
    CorrectedCodec,
    Corrections,
    clip_to_running_norm,
    mask_sent,
    step_velocity,
    velocity_of,
)
from fedloom.compression.feedback import FeedbackCodec, residual_of
from fedloom.core.codec import Warmup, key_round, uplink_key
from fedloom.core.errors import UpdateRejected


def _corrected(spec: str, **fixes: object) -> CorrectedCodec:
    return CorrectedCodec(FeedbackCodec(SpecCodec(spec, seed=0)), Corrections(**fixes))


def _send(codec: CorrectedCodec, state: dict, rnd: int, **tensors: list[float]) -> dict:
    update = {n: torch.tensor(v) for n, v in tensors.items()}
    return codec.decode(codec.encode_stateful(update, uplink_key(rnd, "c"), state))


def test_warmup_ramps_exponentially_to_the_spec_density() -> None:
    ramp = Warmup(rounds=2, start=0.25)
    # 0.25 * (0.01 / 0.25) ** (r - 1) / 2: 0.25, 0.25 * 0.2 = 0.05, then the spec's 0.01
    assert [ramp.density(0.01, r) for r in (1, 2, 3, 10)] == pytest.approx([0.25, 0.05, 0.01, 0.01])
    assert ramp.density(0.01, None) == 0.01  # no round: the spec's density
    assert ramp.largest(0.01) == 0.25
    assert Warmup(rounds=3, start=0.1).density(0.5, 1) == 0.5  # never below the spec's
    assert Warmup(rounds=0, start=0.25).largest(0.01) == 0.01
    paper = Warmup(rounds=4, start=0.25)  # Lin et al.: 0.25, 0.0625, ... to 0.25 / 4**4
    assert [paper.density(0.25 / 4**4, r) for r in range(1, 6)] == pytest.approx(
        [0.25, 0.0625, 0.015625, 0.00390625, 0.0009765625]
    )


def test_key_round_reads_the_encode_key() -> None:
    assert key_round(uplink_key(7, "c3")) == 7
    assert key_round(("down", 2)) == 2
    assert key_round(()) is None and key_round(("audit", 1)) is None


def test_warmup_bytes_per_round_and_the_bound_is_the_densest_round() -> None:
    codec = SpecCodec("topk:0.01+int8", seed=0, warmup=Warmup(rounds=2, start=0.25))
    x = {"w": torch.linspace(-1.0, 1.0, 100)}
    # k = 25, 5, 1: uint16 indices (2 bytes), one float32 scale, int8 values (1 byte)
    for rnd, k in ((1, 25), (2, 5), (3, 1), (9, 1)):
        header = json.dumps([["w", "float32", [100], k]], separators=(",", ":")).encode()
        payload = codec.encode(x, uplink_key(rnd, "c"))
        assert len(payload) == 8 + len(header) + k * 2 + 4 + k
        assert len(payload) == codec.encoded_size(x, uplink_key(rnd, "c"))
        assert int((codec.decode(payload)["w"] != 0).sum()) <= k
    largest = codec.max_encoded_bytes({"w": (100,)}, {"w": torch.float32})
    assert largest == len(codec.encode(x, uplink_key(1, "c"))) == 8 + 26 + 79
    # without a warm-up the header stays [name, dtype, shape] and k is the spec's
    plain = SpecCodec("topk:0.01+int8", seed=0)
    assert len(plain.encode(x, uplink_key(1, "c"))) == 8 + 23 + 7


def _forged(k: int) -> bytes:
    header = json.dumps([["w", "float32", [100], k]], separators=(",", ":")).encode()
    body = struct.pack(f"<{k}H", *range(k)) + struct.pack("<f", 1.0) + bytes(k)
    return struct.pack("<4sI", b"FLZ1", len(header)) + header + body


def test_the_decoder_accepts_only_the_k_its_schedule_can_produce() -> None:
    codec = SpecCodec("topk:0.01+int8", seed=0, warmup=Warmup(rounds=2, start=0.25))
    assert int((codec.decode(_forged(25))["w"] == 0).sum()) == 100  # levels 0, scale 1
    for k in (0, 26, 100):
        with pytest.raises(UpdateRejected, match="kept entries, this codec keeps 1..25"):
            codec.decode(_forged(k))
    with pytest.raises(UpdateRejected, match="malformed codec header entry"):
        SpecCodec("topk:0.01+int8", seed=0).decode(_forged(1))  # no k without a warm-up


def test_velocity_and_masking_by_hand() -> None:
    codec, state = _corrected("topk:0.25", momentum=0.5, masking=True), {}
    # round 1: u = Δ = [1, 2, 3, 4]; the top entry, 4, is sent; u and v there become 0
    assert _send(codec, state, 1, w=[1.0, 2.0, 3.0, 4.0])["w"].tolist() == [0, 0, 0, 4]
    assert residual_of(state)["w"].tolist() == [1, 2, 3, 0]
    assert velocity_of(state)["w"].tolist() == [1, 2, 3, 0]
    # round 2: u = 0.5 * [1, 2, 3, 0] + 1 = [1.5, 2, 2.5, 1]; v = [2.5, 4, 5.5, 1]
    assert _send(codec, state, 2, w=[1.0, 1.0, 1.0, 1.0])["w"].tolist() == [0, 0, 5.5, 0]
    assert residual_of(state)["w"].tolist() == [2.5, 4, 0, 1]
    assert velocity_of(state)["w"].tolist() == [1.5, 2, 0, 1]
    # round 3: u = [0.75, 1, 0, 0.5]; v = [3.25, 5, 0, 1.5]
    assert _send(codec, state, 3, w=[0.0, 0.0, 0.0, 0.0])["w"].tolist() == [0, 5, 0, 0]
    assert residual_of(state)["w"].tolist() == [3.25, 0, 0, 1.5]
    assert velocity_of(state)["w"].tolist() == [0.75, 0, 0, 0.5]


def test_without_masking_the_velocity_keeps_its_sent_coordinates() -> None:
    codec, state = _corrected("topk:0.25", momentum=0.5, masking=False), {}
    _send(codec, state, 1, w=[1.0, 2.0, 3.0, 4.0])
    # u = 0.5 * [1, 2, 3, 4] + 1; v = [1, 2, 3, 0] + u = [2.5, 4, 5.5, 3]
    assert _send(codec, state, 2, w=[1.0, 1.0, 1.0, 1.0])["w"].tolist() == [0, 0, 5.5, 0]
    assert velocity_of(state)["w"].tolist() == [1.5, 2, 2.5, 3]
    assert residual_of(state)["w"].tolist() == [2.5, 4, 0, 3]


def test_the_pure_steps() -> None:
    state = {"compression.velocity.w": torch.tensor([2.0, -2.0])}
    assert step_velocity({"w": torch.tensor([1.0, 1.0])}, state, 0.9)["w"].tolist() == (
        pytest.approx([2.8, -0.8])
    )
    assert step_velocity({"b": torch.tensor([1.0])}, state, 0.9)["b"].tolist() == [1.0]
    masked = mask_sent({"w": torch.tensor([1.0, 2.0, 3.0])}, {"w": torch.tensor([0.0, 5.0, 0.0])})
    assert masked["w"].tolist() == [1, 0, 3]


def test_clipping_is_relative_to_the_running_norm() -> None:
    update = {"a": torch.tensor([3.0]), "b": torch.tensor([4.0])}
    same, norm = clip_to_running_norm(update, None, 2.0)  # no history: as it is
    assert same["a"].item() == 3.0 and norm == 5.0
    # norm 10 above 2 * 2.0: scaled to 4; the running norm moves to 0.9 * 2 + 0.1 * 4
    big = {"a": torch.tensor([6.0]), "b": torch.tensor([8.0])}
    clipped, norm = clip_to_running_norm(big, 2.0, 2.0)
    assert [clipped["a"].item(), clipped["b"].item()] == pytest.approx([2.4, 3.2])
    assert norm == pytest.approx(2.2)
    small, norm = clip_to_running_norm(update, 4.0, 2.0)  # norm 5 within 8: kept
    assert small["b"].item() == 4.0 and norm == pytest.approx(0.9 * 4 + 0.1 * 5)


def test_the_codec_clips_before_it_accumulates() -> None:
    codec, state = _corrected("topk:1.0", momentum=0.0, clip=2.0), {}
    assert _send(codec, state, 1, w=[3.0, 4.0])["w"].tolist() == [3, 4]
    assert state[NORM_KEY].item() == 5.0
    # norm 50 is over 2 * 5: the update is scaled to norm 10 before it is accumulated
    assert _send(codec, state, 2, w=[30.0, 40.0])["w"].tolist() == pytest.approx([6, 8])
    assert state[NORM_KEY].item() == pytest.approx(0.9 * 5 + 0.1 * 10)
    assert not velocity_of(state)  # momentum 0: no velocity kept


def test_aux_tensors_get_feedback_but_no_momentum_or_clip() -> None:
    codec, state = _corrected("topk:0.5", momentum=0.9, clip=1.0), {}
    _send(codec, state, 1, w=[1.0, 2.0], **{"aux/dc": [5.0, 6.0]})
    _send(codec, state, 2, w=[1.0, 2.0], **{"aux/dc": [50.0, 60.0]})
    assert set(velocity_of(state)) == {"w"}
    assert set(residual_of(state)) == {"w", "aux/dc"}
    # aux/dc unclipped and without momentum: [5, 0] + [50, 60] = [55, 60]; 60 sent
    assert residual_of(state)["aux/dc"].tolist() == [55, 0]


def test_the_bound_holds_through_the_warmup() -> None:
    inner = SpecCodec("topk:0.01+int8", seed=0, warmup=Warmup(rounds=3, start=0.25))
    codec = CorrectedCodec(FeedbackCodec(inner), Corrections(clip=2.0))
    shapes = {"w": (40, 50), "b": (50,)}
    bound = codec.max_encoded_bytes(shapes, {n: torch.float32 for n in shapes})
    gen, state, sizes = torch.Generator().manual_seed(0), {}, []
    for rnd in range(1, 6):
        update = {n: torch.randn(s, generator=gen) for n, s in shapes.items()}
        sizes.append(len(codec.encode_stateful(update, uplink_key(rnd, "c"), state)))
    assert sizes[0] == bound and all(s < bound for s in sizes[1:])
    assert sizes[0] > sizes[1] > sizes[2] > sizes[3] == sizes[4]
