"""From a client's update tensors to the integer vector it masks, and from the secure
sum back to the round's mean update.

A ``VectorCodec`` is the encoding both sides agree on: ``encode`` on a client (its own
update, example count and loss), ``decode`` on the server (the sum of the survivors'
vectors and how many survived). ``QuantizedSum`` is plain SecAgg (clip, stochastic
rounding, bounded weights, loss summed alongside); ``fedloom.secure.ddg`` adds
distributed discrete Gaussian noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from fedloom.core.errors import FedloomError
from fedloom.core.tensors import Tensors
from fedloom.secure.encoding import EncodingConfig, decode_aggregate, encode_input


@dataclass(frozen=True)
class Layout:
    """Tensor names, shapes and dtypes in a fixed (sorted) order: how an update is
    flattened into one vector and restored."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]

    @classmethod
    def of(cls, shapes: Mapping[str, tuple[int, ...]], dtypes: Mapping[str, torch.dtype]) -> Layout:
        names = tuple(sorted(shapes))
        return cls(names, tuple(shapes[n] for n in names), tuple(dtypes[n] for n in names))

    @property
    def size(self) -> int:
        return sum(int(np.prod(s, dtype=np.int64)) for s in self.shapes)

    def flatten(self, tensors: Mapping[str, torch.Tensor]) -> np.ndarray:
        if sorted(tensors) != list(self.names):
            raise FedloomError("the update's tensor names differ from the secure round's layout")
        parts = []
        for name, shape in zip(self.names, self.shapes, strict=True):
            t = tensors[name]
            if tuple(t.shape) != shape:
                raise FedloomError(f"{name}: shape {tuple(t.shape)} != {shape}")
            parts.append(t.detach().cpu().reshape(-1).double().numpy())
        return np.concatenate(parts) if parts else np.zeros(0)

    def unflatten(self, vector: np.ndarray) -> Tensors:
        out: Tensors = {}
        at = 0
        for name, shape, dtype in zip(self.names, self.shapes, self.dtypes, strict=True):
            size = int(np.prod(shape, dtype=np.int64))
            out[name] = torch.from_numpy(vector[at : at + size].copy()).reshape(shape).to(dtype)
            at += size
        return out


@dataclass(frozen=True)
class Decoded:
    """The round's aggregate as the server sees it."""

    mean: np.ndarray
    weight: int
    """Σ of the survivors' weights (their number with equal weights)."""
    loss: float | None
    """Their weighted mean training loss, when it was summed securely."""


class VectorCodec(Protocol):
    length: int
    """Integer coordinates masked."""
    bits: int
    """Modulus 2**bits."""
    noise: str | None
    """What noise the clients add (None: none)."""

    def encode(
        self, flat: np.ndarray, num_examples: int, loss: float, rnd: int, cid: str
    ) -> np.ndarray: ...

    def decode(self, total: np.ndarray, survivors: int, rnd: int) -> Decoded: ...

    def released(self, rnd: int) -> None:
        """Masked inputs of round ``rnd`` reached the server (a DP release, even if the
        round then aborts)."""


class QuantizedSum:
    """SecAgg's own encoding: ``w · q(update)``, ``w · q(loss)`` and ``w``, with ``w`` the
    client's example count capped at ``max_weight``. The loss is clipped to
    ``[0, loss_clip]`` and quantized on the update's grid (scaled by clip / loss_clip)."""

    def __init__(
        self, dim: int, encoding: EncodingConfig, bits: int, loss_clip: float, rng_for: RngFor
    ) -> None:
        self.dim, self.encoding, self.bits = dim, encoding, bits
        self.length = dim + 2
        self.noise: str | None = None
        self.loss_clip = loss_clip
        self.rng_for = rng_for

    def encode(
        self, flat: np.ndarray, num_examples: int, loss: float, rnd: int, cid: str
    ) -> np.ndarray:
        weight = max(0, min(int(num_examples), self.encoding.max_weight))
        loss_coord = min(max(loss, 0.0), self.loss_clip) * self.encoding.clip / self.loss_clip
        values = np.append(np.asarray(flat, dtype=np.float64), loss_coord)
        return encode_input(values, weight, self.encoding, self.bits, self.rng_for(rnd, cid))

    def released(self, rnd: int) -> None:
        """Nothing to account: no noise, no privacy claim."""

    def decode(self, total: np.ndarray, survivors: int, rnd: int) -> Decoded:
        mean, weight = decode_aggregate(total, self.encoding, self.bits)
        loss = float(mean[-1]) * self.loss_clip / self.encoding.clip
        return Decoded(mean[:-1], weight, loss)


class RngFor(Protocol):
    def __call__(self, rnd: int, cid: str) -> np.random.Generator: ...
