"""Hostile safetensors payloads: every one is an ``UpdateRejected``, cheaply.

A received frame is decoded in place (``compression/safeview.py``); these headers once
escaped as ``TypeError`` or ``RuntimeError`` (crashing the round loop), or cost seconds
of CPU or gigabytes of memory to read.
"""

import json
import struct
import tracemalloc

import pytest
import torch

from fedloom.compression.codec import RawCodec
from fedloom.core.errors import UpdateRejected
from fedloom.core.framing import nesting_depth


def blob(header: dict, body: bytes = b"") -> bytearray:
    text = json.dumps(header).encode()
    return bytearray(struct.pack("<Q", len(text)) + text + body)


HOSTILE = {
    "dtype is a list": {"w": {"dtype": [], "shape": [1], "data_offsets": [0, 4]}},
    "dtype is an object": {"w": {"dtype": {}, "shape": [1], "data_offsets": [0, 4]}},
    "shape overflows": {"w": {"dtype": "F32", "shape": [0, 2**62, 2**62], "data_offsets": [0, 0]}},
    "too many dims": {"w": {"dtype": "F32", "shape": [1] * 9, "data_offsets": [0, 4]}},
    "a dim past 2**40": {"w": {"dtype": "F32", "shape": [0, 2**41], "data_offsets": [0, 0]}},
    "shape of objects": {"w": {"dtype": "F32", "shape": [{}, {}], "data_offsets": [0, 4]}},
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_headers_are_rejected(case):
    with pytest.raises(UpdateRejected):
        RawCodec().decode(blob(HOSTILE[case], b"\0" * 4))


def test_a_hundred_thousand_dims_cost_no_time():
    # math.prod over 100,000 huge dims once took half a minute while holding the GIL
    header = {"w": {"dtype": "F32", "shape": [2**62] * 100_000, "data_offsets": [0, 4]}}
    with pytest.raises(UpdateRejected):
        RawCodec().decode(blob(header, b"\0" * 4))


def test_a_header_over_the_limit_is_refused_unread():
    header = {"__metadata__": {"k": "x" * (5 << 20)}}
    with pytest.raises(UpdateRejected, match="does not fit"):
        RawCodec().decode(blob(header))


def test_a_long_string_costs_no_memory_in_the_depth_scan():
    text = '{"k":"' + "x" * 10_000_000 + '"}'
    tracemalloc.start()
    try:
        assert nesting_depth(text) == 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # the regex once kept ~100 bytes of state per character


def test_an_honest_blob_still_decodes_in_place():
    from safetensors.torch import save

    data = bytearray(save({"w": torch.arange(6.0).reshape(2, 3)}))
    out = RawCodec().decode(data)
    assert torch.equal(out["w"], torch.arange(6.0).reshape(2, 3))
