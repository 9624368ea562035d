import struct

import pytest
import torch

from fedloom.core.errors import UpdateRejected
from fedloom.core.message import Message
from fedloom.core.seeding import derive_seed, generator
from fedloom.transport.wire import decode_message, encode_message, frame_size


def test_derived_seeds_depend_only_on_their_keys():
    assert derive_seed(1, "sample", 3) == derive_seed(1, "sample", 3)
    assert derive_seed(1, "sample", 3) != derive_seed(1, "sample", 4)
    assert derive_seed(1, "sample", 3) != derive_seed(2, "sample", 3)
    a = torch.rand(5, generator=generator(7, "x"))
    b = torch.rand(5, generator=generator(7, "x"))
    assert torch.equal(a, b)


def test_frame_round_trip_and_exact_size():
    message = Message("fit_result", 4, "client-7", b"\x00\x01payload", {"num_examples": 12})
    frame = encode_message(message)
    assert len(frame) == frame_size(message)
    assert decode_message(frame) == message


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"FLM1",
        b"XXXX" + struct.pack("<I", 2) + b"{}",
        b"FLM1" + struct.pack("<I", 999) + b"{}",
        b"FLM1" + struct.pack("<I", 5) + b"notjs",
        b"FLM1" + struct.pack("<I", 2) + b"{}",
    ],
)
def test_malformed_frames_are_rejected(frame):
    with pytest.raises(UpdateRejected):
        decode_message(frame)
