"""Error feedback (Seide et al. 2014; Karimireddy et al. 2019) for a lossy uplink codec.

The client adds last round's residual to its update, and keeps as the new residual what
the codec will drop this time: ``sent + new_residual == update + old_residual``. It finds
``sent`` by doing the very encode the client would do (same codec, same key, hence the
same random draws) and hands the payload on, so nothing about the codec's internals leaks
in here and the update is encoded once.
The residual lives in the client's persistent state: it is unnoised and stays on the
client (in simulation, in the run's client store, never in the server's checkpoint).
"""

from __future__ import annotations

from fedloom.client.context import FitContext
from fedloom.compression.codec import Codec, uplink_key
from fedloom.core.tensors import Tensors

RESIDUAL_PREFIX = "compression.residual."


class ErrorFeedback:
    """An update hook; it must run last, right before the uplink encode."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec

    def __call__(self, update: Tensors, ctx: FitContext) -> Tensors:
        corrected = {
            name: u + ctx.state[RESIDUAL_PREFIX + name]
            if RESIDUAL_PREFIX + name in ctx.state
            else u
            for name, u in update.items()
        }
        payload = self.codec.encode(corrected, uplink_key(ctx.round, ctx.client_id))
        sent = self.codec.decode(payload)
        for name, value in corrected.items():
            ctx.state[RESIDUAL_PREFIX + name] = value - sent[name]
        ctx.encoded = (corrected, payload)  # the client sends it as is: one encode a round
        return corrected


def residual_of(state: Tensors) -> Tensors:
    """The residuals in a client's state, by tensor name."""
    n = len(RESIDUAL_PREFIX)
    return {k[n:]: v for k, v in state.items() if k.startswith(RESIDUAL_PREFIX)}
