"""Moving Messages between server and clients. No model code lives here."""

from fedloom.transport.base import Failure, Reply, Transport
from fedloom.transport.inprocess import InProcessTransport
from fedloom.transport.wire import decode_message, encode_message, frame_size

__all__ = [
    "Failure",
    "InProcessTransport",
    "Reply",
    "Transport",
    "decode_message",
    "encode_message",
    "frame_size",
]
