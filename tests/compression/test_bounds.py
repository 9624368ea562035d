"""Codecs bound their own output, and a received blob decodes without a copy.

``max_encoded_bytes`` is what the server's upload limit is built on: it must never be
below a real encoding (an honest update would be refused), and it should not be far above
it (an oversized upload would be read). A safetensors blob in a writable buffer decodes to
views of it, accepting and refusing exactly what ``safetensors.torch.load`` does.
"""

from __future__ import annotations

import random

import pytest
import torch
from safetensors.torch import load

from fedloom.compression.blob import SpecCodec
from fedloom.compression.codec import RawCodec, max_encoded_bytes
from fedloom.compression.safeview import tensors_view
from fedloom.core.errors import UpdateRejected
from fedloom.core.tensors import Tensors

STATES: list[Tensors] = [
    {"fc.weight": torch.randn(10, 64), "fc.bias": torch.randn(10)},
    {
        "conv.weight": torch.randn(8, 3, 3, 3, dtype=torch.float16),
        "norm.bias": torch.randn(8, dtype=torch.bfloat16),
        "empty": torch.zeros(0, 5),
        'ünïcode "quoted" \\ name': torch.randn(70_000),  # int32 indices when sparse
        "scalar": torch.tensor(1.5, dtype=torch.float64),
    },
]


def _shapes(state: Tensors) -> tuple[dict[str, tuple[int, ...]], dict[str, torch.dtype]]:
    return {n: tuple(t.shape) for n, t in state.items()}, {n: t.dtype for n, t in state.items()}


@pytest.mark.parametrize("state", STATES)
def test_the_raw_bound_covers_the_encoding_closely(state):
    bound = max_encoded_bytes(RawCodec(), *_shapes(state))
    encoded = len(RawCodec().encode(state))
    assert bound is not None and encoded <= bound <= encoded + 200 * len(state)


@pytest.mark.parametrize(
    "spec", ["f32", "fp16", "bf16", "int8", "int4", "topk:0.01+int8", "randk:0.1", "topk:0.5+int4"]
)
@pytest.mark.parametrize("chunk", [None, 64])
@pytest.mark.parametrize("state", STATES)
def test_the_spec_bound_is_the_exact_encoded_size(state, spec, chunk):
    codec = SpecCodec(spec, seed=3, chunk=chunk)
    assert codec.max_encoded_bytes(*_shapes(state)) == len(codec.encode(state, ("up", 1, "0")))


def test_a_codec_without_a_bound_has_none():
    assert max_encoded_bytes(object(), {"w": (3,)}, {"w": torch.float32}) is None


def test_a_received_blob_decodes_to_views_of_its_buffer():
    state = STATES[1]
    buffer = bytearray(RawCodec().encode(state))
    decoded = RawCodec().decode(memoryview(buffer))
    start = torch.frombuffer(buffer, dtype=torch.uint8).data_ptr()
    for name, t in state.items():
        assert torch.equal(decoded[name], t) and decoded[name].dtype == t.dtype
        if t.numel():
            assert start <= decoded[name].data_ptr() < start + len(buffer)
    shared = RawCodec().decode(bytes(buffer))  # bytes may be shared: tensors of their own
    assert all(not start <= t.data_ptr() < start + len(buffer) for t in shared.values())


def _outcome(decode, blob: bytes) -> dict[str, torch.Tensor] | None:
    try:
        return decode(blob)
    except UpdateRejected:
        return None
    except Exception:  # safetensors' own errors, as RawCodec.decode maps them
        return None


def test_the_view_reader_agrees_with_safetensors_on_mangled_blobs():
    blob = RawCodec().encode(STATES[0])
    rng = random.Random(0)
    agreed = {"both accept": 0, "both refuse": 0}
    for trial in range(400):
        mangled = bytearray(blob)
        if trial % 4 == 0:
            del mangled[rng.randrange(len(mangled)) :]
        else:
            at = rng.randrange(min(len(mangled), 200))  # mostly the length and JSON header
            mangled[at] = rng.randrange(256)
        ours = _outcome(lambda b: tensors_view(bytearray(b)), bytes(mangled))
        theirs = _outcome(load, bytes(mangled))
        assert (ours is None) == (theirs is None), f"trial {trial}: {bytes(mangled[:200])!r}"
        if ours is not None and theirs is not None:
            assert ours.keys() == theirs.keys()
            assert all(torch.equal(ours[k], theirs[k]) for k in ours)
        agreed["both refuse" if ours is None else "both accept"] += 1
    assert min(agreed.values()) > 20  # both kinds of case were exercised
