"""The codec contract: ``encode(tensors) -> bytes``, ``decode(bytes) -> tensors``.

Encoding may be random (stochastic rounding, randk); the caller passes a ``key`` such as
``("up", round, client)`` and the codec derives its generator from (seed, *key), so an
encode is reproducible (a resumed run sends the same bytes).

A codec may also say how large an encoded update can legally be (``max_encoded_bytes``):
the server then refuses any larger upload before reading it. A codec that keeps state on
the client between rounds (error feedback's residual) is a ``StatefulCodec``: the client
encodes through ``encode_update``, which hands it the client's persistent state.

Registered codecs (kind ``codec``) are factories ``factory(arg, ctx) -> Codec`` with a
``CodecContext``. This module imports no torch at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from fedloom.core.message import Payload

if TYPE_CHECKING:
    import torch

    from fedloom.core.tensors import Tensors

Key = tuple[object, ...]
Shapes = Mapping[str, tuple[int, ...]]
DTypes = Mapping[str, "torch.dtype"]
Direction = Literal["up", "down"]


def uplink_key(rnd: int, client_id: str) -> Key:
    """The key of a client's update encode in round ``rnd``."""
    return ("up", rnd, client_id)


def downlink_key(rnd: int) -> Key:
    return ("down", rnd)


def key_round(key: Key) -> int | None:
    """The round an encode key names (``uplink_key``, ``downlink_key``), else None."""
    if len(key) >= 2 and key[0] in ("up", "down") and type(key[1]) is int:
        return key[1]
    return None


class Codec(Protocol):
    """Turns named tensors into bytes and back. ``len(encode(t))`` is what crosses the wire.

    ``decode`` of a writable buffer (a received frame) may return tensors that share its
    memory; of ``bytes`` it returns tensors of their own."""

    name: str

    def encode(self, tensors: Tensors, key: Key = ()) -> bytes: ...

    def decode(self, data: Payload) -> Tensors: ...


@runtime_checkable
class BoundedCodec(Protocol):
    """A codec that knows the largest encoding of tensors of given shapes and dtypes
    (``None``: no bound, e.g. a wrapper around a codec that has none)."""

    def max_encoded_bytes(self, shapes: Shapes, dtypes: DTypes) -> int | None: ...


@runtime_checkable
class StatefulCodec(Protocol):
    """A codec whose client-side encode reads and updates the client's persistent state
    (``Client.state``: checkpointed for simulated clients, kept on the device otherwise)."""

    def encode_stateful(self, tensors: Tensors, key: Key, state: Tensors) -> bytes: ...


def max_encoded_bytes(codec: object, shapes: Shapes, dtypes: DTypes) -> int | None:
    """The codec's bound for an update of these shapes, or None if it has none."""
    if isinstance(codec, BoundedCodec):
        return codec.max_encoded_bytes(shapes, dtypes)
    return None


def encode_update(codec: Codec, update: Tensors, key: Key, state: Tensors) -> bytes:
    """A client's update as it is sent: through the state of a stateful codec, else plain."""
    if isinstance(codec, StatefulCodec):
        return codec.encode_stateful(update, key, state)
    return codec.encode(update, key)


@dataclass(frozen=True)
class Warmup:
    """A sparsifier's density warm-up: round r <= ``rounds`` keeps the share
    ``start * (final / start) ** ((r - 1) / rounds)`` of each tensor, an exponential ramp
    from ``start`` down to the spec's own fraction ``final`` (Lin et al. 2018)."""

    rounds: int
    start: float

    def density(self, final: float, rnd: int | None) -> float:
        """The share kept in round ``rnd`` (1-based); ``final`` after the warm-up, or
        when the round is unknown."""
        if rnd is None or rnd > self.rounds or self.start <= final:
            return final
        return self.start * (final / self.start) ** ((max(rnd, 1) - 1) / self.rounds)

    def largest(self, final: float) -> float:
        """The largest share any round keeps: what bounds an upload."""
        return max(final, self.start) if self.rounds > 0 else final


@dataclass(frozen=True)
class CodecContext:
    """What a registered codec factory is built with, besides its own argument."""

    seed: int
    """The run's seed: a random codec derives its generators from it and the encode key."""
    chunk: int | None
    """``compression.chunk``: values per quantization scale (None: one per tensor)."""
    direction: Direction
    """``up`` for the clients' updates, ``down`` for the global model."""
    warmup: Warmup | None = None
    """The uplink's density warm-up (``compression.warmup_rounds``): a sparsifying codec
    keeps ``warmup.density(F, key_round(key))`` of each tensor; None: no warm-up."""
