"""Moving Messages between server and clients. No model code lives here."""

from typing import TYPE_CHECKING

from fedloom.core.lazy import lazy_exports

if TYPE_CHECKING:
    from fedloom.transport.base import Failure as Failure
    from fedloom.transport.base import Reply as Reply
    from fedloom.transport.base import Transport as Transport
    from fedloom.transport.inprocess import InProcessTransport as InProcessTransport
    from fedloom.transport.wire import decode_message as decode_message
    from fedloom.transport.wire import encode_message as encode_message
    from fedloom.transport.wire import frame_size as frame_size

_EXPORTS = {
    "Failure": "fedloom.transport.base",
    "Reply": "fedloom.transport.base",
    "Transport": "fedloom.transport.base",
    "InProcessTransport": "fedloom.transport.inprocess",
    "decode_message": "fedloom.transport.wire",
    "encode_message": "fedloom.transport.wire",
    "frame_size": "fedloom.transport.wire",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
