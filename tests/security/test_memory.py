"""Receiving an upload costs about its size in memory, not three times it.

A 100 MB update goes from chunks to checked-ready tensors the way the server takes it in
(``join_chunks`` with the announced size, ``decode_message``, ``RawCodec.decode``), under
``tracemalloc``. The tensors are views of the received buffer, which the test proves from
their addresses (torch's own allocations are invisible to ``tracemalloc``). The way it was
done before (grow a bytearray, copy the payload into ``bytes``, ``safetensors.torch.load``)
is measured the same way and costs about three times the frame.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import torch
from safetensors.torch import load

from fedloom.compression.codec import RawCodec
from fedloom.core.message import Message
from fedloom.core.tensors import Tensors
from fedloom.transport.grpc_common import frame_chunks, join_chunks
from fedloom.transport.wire import decode_message, frame_size

VALUES = 25_000_000  # 100 MB of float32
CHUNK = 1 << 20
BOUND = 1.3


def _peak(receive: Callable[[], Tensors]) -> tuple[Tensors, int]:
    """What ``receive`` returns, and the most memory it held at once (Python allocations)."""
    tracemalloc.start()
    try:
        tensors = receive()
        return tensors, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _address_range(frame: bytearray | memoryview) -> range:
    buffer = frame.obj if isinstance(frame, memoryview) else frame
    start = torch.frombuffer(buffer, dtype=torch.uint8).data_ptr()
    return range(start, start + len(buffer))


def test_an_upload_is_received_and_decoded_within_1_3_times_its_size():
    update = {"w": torch.arange(VALUES, dtype=torch.float32), "b": torch.ones(10)}
    message = Message("fit_result", 1, "0", RawCodec().encode(update), {"num_examples": 5})
    size = frame_size(message)
    chunks = list(frame_chunks(message, CHUNK))  # as they come off the network
    assert len(chunks) == 97  # the header, then 96 chunks of the 100 MB payload
    frames: list[bytearray | memoryview] = []

    def receive() -> Tensors:
        frames.append(join_chunks(iter(chunks), size, size))
        return RawCodec().decode(decode_message(frames[0]).payload)

    tensors, peak = _peak(receive)
    assert peak <= BOUND * size, f"peak {peak / size:.2f} x the frame"
    assert torch.equal(tensors["w"], update["w"]) and torch.equal(tensors["b"], update["b"])
    inside = _address_range(frames[0])
    for t in tensors.values():
        assert t.data_ptr() in inside  # a view of the received frame: no copy anywhere
        assert t.data_ptr() % 4 == 0  # aligned for float32 kernels

    def receive_as_before() -> Tensors:
        frame = join_chunks(iter(chunks), size)  # grown chunk by chunk
        payload = bytes(memoryview(frame)[len(chunks[0]) :])  # decode_message's old copy
        return load(payload)  # safetensors copies every tensor out of the bytes

    old, old_peak = _peak(receive_as_before)
    assert torch.equal(old["w"], update["w"])
    assert old_peak > 2.5 * size, f"old peak {old_peak / size:.2f} x the frame"
