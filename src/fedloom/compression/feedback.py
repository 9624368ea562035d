"""Error feedback (Seide et al. 2014; Karimireddy et al. 2019) as a wrapper of a lossy
uplink codec.

The client adds last round's residual to its update and keeps as the new residual what
the codec dropped this time: ``sent + new_residual == update + old_residual``. The
wrapper learns ``sent`` by decoding its own payload (the server decodes the same bytes
with the same codec), so it works for every codec and the update is encoded once.
Because it sits in the codec, every tensor the client sends gets it, including those an
update transform adds after training (SCAFFOLD's ``aux/scaffold_dc/...``).
The residual lives in the client's persistent state under ``compression.residual.<name>``:
it is unnoised and stays on the client (in simulation, in the run's client store, never
in the server's checkpoint).
"""

from __future__ import annotations

from fedloom.core.codec import Codec, DTypes, Key, Shapes, max_encoded_bytes
from fedloom.core.message import Payload
from fedloom.core.tensors import Tensors

RESIDUAL_PREFIX = "compression.residual."


class FeedbackCodec:
    """``inner`` with error feedback on the client's encode (``encode_stateful``); it
    decodes, and bounds an upload, exactly as ``inner``."""

    def __init__(self, inner: Codec) -> None:
        self.inner = inner
        self.name = inner.name

    def encode_stateful(self, tensors: Tensors, key: Key, state: Tensors) -> bytes:
        return self.encode_and_send(tensors, key, state)[0]

    def encode_and_send(self, tensors: Tensors, key: Key, state: Tensors) -> tuple[bytes, Tensors]:
        """The payload and what it sends (as the server decodes it); updates the residual."""
        corrected = {
            name: t + state[RESIDUAL_PREFIX + name] if RESIDUAL_PREFIX + name in state else t
            for name, t in tensors.items()
        }
        payload = self.inner.encode(corrected, key)
        sent = self.inner.decode(payload)
        for name, value in corrected.items():
            state[RESIDUAL_PREFIX + name] = value - sent[name]
        return payload, sent

    def encode(self, tensors: Tensors, key: Key = ()) -> bytes:
        """Without a client's state there is no residual: ``inner``'s plain encode."""
        return self.inner.encode(tensors, key)

    def decode(self, data: Payload) -> Tensors:
        return self.inner.decode(data)

    def max_encoded_bytes(self, shapes: Shapes, dtypes: DTypes) -> int | None:
        return max_encoded_bytes(self.inner, shapes, dtypes)


def residual_of(state: Tensors) -> Tensors:
    """The residuals in a client's state, by tensor name."""
    n = len(RESIDUAL_PREFIX)
    return {k[n:]: v for k, v in state.items() if k.startswith(RESIDUAL_PREFIX)}
