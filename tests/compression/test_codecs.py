"""Codecs: exact sizes, round trips, unbiased stochastic rounding, untrusted input."""

import json
import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedloom.compression.blob import SpecCodec
from fedloom.compression.codec import RawCodec
from fedloom.compression.spec import parse_spec
from fedloom.config import load_config
from fedloom.core.errors import ConfigError, UpdateRejected

W = torch.arange(12, dtype=torch.float32).view(3, 4) / 10 - 0.55  # -0.55 .. 0.55
B = torch.tensor([0.5, -0.25, 0.125])
TENSORS = {"w": W, "b": B}
# the header a decoder reads: [name, dtype, shape] per tensor, compact JSON
HEADER = b'[["w","float32",[3,4]],["b","float32",[3]]]'
PREFIX = 4 + 4  # magic + uint32 header length


def test_header_is_the_compact_listing():
    blob = SpecCodec("int8", seed=0).encode(TENSORS)
    assert blob[:4] == b"FLZ1"
    assert struct.unpack_from("<I", blob, 4)[0] == len(HEADER) == 43
    assert blob[8 : 8 + 43] == HEADER


@pytest.mark.parametrize(
    ("spec", "chunk", "body"),
    [
        ("f32", None, 4 * 12 + 4 * 3),
        ("fp16", None, 2 * 12 + 2 * 3),
        ("bf16", None, 2 * 12 + 2 * 3),
        ("int8", None, (4 + 12) + (4 + 3)),  # one float32 scale per tensor + 1 byte a value
        ("int8", 5, (3 * 4 + 12) + (1 * 4 + 3)),  # 12 values in chunks of 5: 3 scales
        ("int4", None, (4 + 6) + (4 + 2)),  # two values a byte; 3 values take 2 bytes
        ("int4", 2, (6 * 4 + 6) + (2 * 4 + 2)),
        ("topk:0.25", None, (3 * 2 + 3 * 4) + (1 * 2 + 1 * 4)),  # k=ceil(.25n), uint16 index
        ("topk:0.25+int8", None, (3 * 2 + 4 + 3) + (1 * 2 + 4 + 1)),
        ("randk:0.5+int4", None, (6 * 2 + 4 + 3) + (2 * 2 + 4 + 1)),
    ],
)
def test_encoded_size_is_exact(spec, chunk, body):
    codec = SpecCodec(spec, seed=0, chunk=chunk)
    blob = codec.encode(TENSORS, ("up", 1, "0"))
    assert len(blob) == PREFIX + len(HEADER) + body == codec.encoded_size(TENSORS)


def test_large_tensors_use_int32_indices():
    codec = SpecCodec("topk:0.001", seed=0)
    t = {"x": torch.randn(70_000)}  # > 65,536 entries: 4-byte indices, k = 70
    assert len(codec.encode(t)) == PREFIX + len(b'[["x","float32",[70000]]]') + 70 * (4 + 4)


def test_lossless_and_float_round_trips():
    assert torch.equal(
        SpecCodec("f32", seed=0).decode(SpecCodec("f32", seed=0).encode(TENSORS))["w"], W
    )
    half = SpecCodec("fp16", seed=0)
    assert torch.equal(half.decode(half.encode(TENSORS))["w"], W.half().float())
    bf = SpecCodec("bf16", seed=0)
    out = bf.decode(bf.encode(TENSORS))
    assert torch.equal(out["b"], B.bfloat16().float()) and out["b"].dtype == torch.float32


def test_topk_keeps_the_largest_magnitudes_exactly():
    codec = SpecCodec("topk:0.25", seed=0)
    out = codec.decode(codec.encode(TENSORS))
    # |w| largest: -0.55, 0.55, -0.45 (indices 0, 11, 1); b keeps 0.5
    expected = torch.zeros(12)
    expected[[0, 1, 11]] = W.flatten()[[0, 1, 11]]
    assert torch.equal(out["w"].flatten(), expected)
    assert torch.equal(out["b"], torch.tensor([0.5, 0.0, 0.0]))


def test_randk_draws_depend_on_the_key_only():
    codec = SpecCodec("randk:0.5", seed=3)
    a, b = codec.encode(TENSORS, ("up", 4, "7")), codec.encode(TENSORS, ("up", 4, "7"))
    assert a == b
    assert a != codec.encode(TENSORS, ("up", 5, "7"))


@pytest.mark.parametrize(("spec", "levels"), [("int8", 127), ("int4", 7)])
def test_stochastic_quantization_is_unbiased(spec, levels):
    value = torch.tensor([0.3, -0.7, 1.0, 0.05, -0.0137, 0.0])
    codec = SpecCodec(spec, seed=1)
    draws = torch.stack([codec.decode(codec.encode({"v": value}, (i,)))["v"] for i in range(2000)])
    scale = 1.0 / levels
    # every draw is one of the two grid points around the value
    assert torch.all((draws - value).abs() < scale + 1e-6)
    # the mean converges to the value (std of the mean <= scale / 2 / sqrt(3000))
    assert torch.allclose(draws.mean(0), value, atol=4 * scale / 2 / 2000**0.5)
    # nearest rounding would be biased on 0.3 for int4: 2.1 -> 2, i.e. 0.2857
    assert draws.std(0)[0] > 0
    assert torch.equal(draws[:, 2], torch.ones(2000))  # the max is on the grid: exact


def test_quantization_error_shrinks_with_chunks():
    x = {"x": torch.cat([torch.randn(512) * 1e-3, torch.randn(512) * 10])}
    err = {}
    for chunk in (None, 256):
        codec = SpecCodec("int8", seed=0, chunk=chunk)
        err[chunk] = float((codec.decode(codec.encode(x))["x"][:512] - x["x"][:512]).abs().max())
    assert err[256] < err[None] / 100


def _valid_blob():
    return SpecCodec("topk:0.5+int8", seed=0).encode(TENSORS)


def _with_header(header: bytes, body: bytes) -> bytes:
    return b"FLZ1" + struct.pack("<I", len(header)) + header + body


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (b"", "shorter than its prefix"),
        (b"XXXX" + _valid_blob()[4:], "bad codec magic"),
        (_valid_blob()[:-1], "payload has"),
        (_valid_blob() + b"\0", "payload has"),
        (_with_header(b"{nope", b""), "not JSON"),
        (_with_header(b'{"w": 1}', b""), "must be a list"),
        (_with_header(b'[["w","int64",[3]]]', b""), "malformed codec header entry"),
        (_with_header(b'[["w",[1],[3]]]', b""), "malformed codec header entry"),
        (_with_header(b'[["w","float32",[3.0]]]', b""), "malformed codec header entry"),
        (_with_header(b'[["w","float32",[-1]]]', b""), "malformed codec header entry"),
        (_with_header(b'[["w","float32",[3]],["w","float32",[3]]]', b""), "malformed"),
        (_with_header(b'[["w","float32",[100000,100000,100000]]]', b"\0" * 16), "header implies"),
        (b"FLZ1" + struct.pack("<I", 1 << 30) + b"[]", "does not fit"),
    ],
)
def test_malformed_blobs_are_rejected(blob, reason):
    with pytest.raises(UpdateRejected, match=reason):
        SpecCodec("topk:0.5+int8", seed=0).decode(blob)


def test_forged_indices_scales_and_levels_are_rejected():
    header = b'[["x","float32",[4]]]'
    codec = SpecCodec("topk:0.5+int8", seed=0)  # k = 2: 2 uint16 indices, 1 scale, 2 int8
    ok = struct.pack("<HHf", 1, 3, 0.5) + struct.pack("<bb", 10, -127)
    out = codec.decode(_with_header(header, ok))["x"]
    assert torch.allclose(out, torch.tensor([0.0, 5.0, 0.0, -63.5]))
    bad = {
        "unsorted": struct.pack("<HHf", 3, 1, 0.5) + struct.pack("<bb", 1, 1),
        "out of range": struct.pack("<HHf", 1, 4, 0.5) + struct.pack("<bb", 1, 1),
        "nan scale": struct.pack("<HHf", 1, 3, float("nan")) + struct.pack("<bb", 1, 1),
        "negative scale": struct.pack("<HHf", 1, 3, -1.0) + struct.pack("<bb", 1, 1),
        "level -128": struct.pack("<HHf", 1, 3, 0.5) + struct.pack("<bb", 1, -128),
    }
    for body in bad.values():
        with pytest.raises(UpdateRejected):
            codec.decode(_with_header(header, body))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_corrupted_blobs_never_crash(data):
    blob = bytearray(_valid_blob())
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    try:
        out = SpecCodec("topk:0.5+int8", seed=0).decode(bytes(blob[:cut]))
    except UpdateRejected:
        return
    assert all(isinstance(t, torch.Tensor) for t in out.values())


def test_raw_codec_rejects_garbage():
    with pytest.raises(UpdateRejected):
        RawCodec().decode(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")


def test_spec_parsing():
    assert parse_spec("topk:0.01+int8") == parse_spec(" topk:0.01 + int8 ")
    spec = parse_spec("randk:0.1")
    assert (spec.sparsifier, spec.fraction, spec.quantizer) == ("randk", 0.1, "f32")
    assert parse_spec("none").lossless and not parse_spec("fp16").lossless
    for bad in ("int3", "topk", "topk:2", "int8+topk:0.1", "int8+int4", "topk:0.1+randk:0.1", ""):
        with pytest.raises(ValueError):
            parse_spec(bad)


def test_config_reports_bad_specs_with_their_keys():
    with pytest.raises(ConfigError) as info:
        load_config(
            None, ["compression.up=int3", "compression.down=topk:0.1", "compression.prune=1.5"]
        )
    text = str(info.value)
    assert "compression.up" in text and "compression.down" in text and "compression.prune" in text
    cfg = load_config(None, ["compression.up=topk:0.01+int8", "compression.chunk=256"])
    assert cfg.compression.up == "topk:0.01+int8" and cfg.compression.chunk == 256
    assert json.loads(json.dumps(cfg.model_dump()))["compression"]["down"] == "none"


@pytest.mark.parametrize("spec", ["int8", "int4", "topk:0.5+int8", "randk:0.5+int4", "bf16"])
def test_empty_tensors_cost_no_body_bytes_and_round_trip(spec: str) -> None:
    codec = SpecCodec(spec, seed=0, chunk=4)
    tensors = {"empty": torch.zeros(0), "flat": torch.zeros(3, 0), "w": torch.randn(9)}
    payload = codec.encode(tensors)
    assert len(payload) == codec.encoded_size(tensors)
    out = codec.decode(payload)
    assert out["empty"].shape == (0,) and out["flat"].shape == (3, 0)
    assert out["w"].shape == (9,)


def test_pruning_needs_the_whole_model_to_be_global() -> None:
    with pytest.raises(ConfigError, match="finetune.mode=full"):  # at config time
        load_config(None, ["model.name=mlp_2nn", "finetune.mode=lora", "compression.prune=0.5"])
