"""One client's state as one fixed-size row of bytes (the client store's rows)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from fedloom.core.errors import FedloomError
from fedloom.core.tensors import Tensors

ALIGN = 8
"""Every tensor starts at a multiple of this many bytes in its row."""


@dataclass(frozen=True)
class Slot:
    """Where one named tensor sits in a row."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


@dataclass(frozen=True)
class Layout:
    """The tensors every client's state holds, and the row they make."""

    num_clients: int
    slots: tuple[Slot, ...]

    @property
    def row_bytes(self) -> int:
        end = max((s.offset + s.nbytes for s in self.slots), default=0)
        return max(ALIGN, -(-end // ALIGN) * ALIGN)

    @classmethod
    def of(cls, state: Mapping[str, torch.Tensor], num_clients: int) -> Layout:
        slots, offset = [], 0
        for name in sorted(state):
            t = state[name]
            slot = Slot(name, t.dtype, tuple(t.shape), offset)
            slots.append(slot)
            offset += -(-slot.nbytes // ALIGN) * ALIGN
        return cls(num_clients, tuple(slots))

    def encode(self, state: Mapping[str, torch.Tensor]) -> np.ndarray:
        """``state`` as one row of bytes; a state of other tensors is an error."""
        if sorted(state) != [s.name for s in self.slots]:
            raise FedloomError(
                f"a client's state holds {sorted(state)[:4]}, but the client store's rows "
                f"hold {[s.name for s in self.slots][:4]}: every client must keep the same "
                "state tensors"
            )
        row = np.zeros(self.row_bytes, dtype=np.uint8)
        for s in self.slots:
            t = state[s.name].detach().cpu()
            if t.dtype != s.dtype or tuple(t.shape) != s.shape:
                raise FedloomError(
                    f"client state {s.name}: {t.dtype} {tuple(t.shape)}, but the client "
                    f"store holds {s.dtype} {s.shape}"
                )
            row[s.offset : s.offset + s.nbytes] = t.contiguous().reshape(-1).view(torch.uint8)
        return row

    def decode(self, row: np.ndarray) -> Tensors:
        """The tensors of one row (copies: the row may be overwritten later)."""
        out = {}
        for s in self.slots:
            raw = torch.from_numpy(np.array(row[s.offset : s.offset + s.nbytes]))
            out[s.name] = raw.view(s.dtype).reshape(s.shape)
        return out

    def to_json(self) -> bytes:
        slots = [
            {"name": s.name, "dtype": str(s.dtype).removeprefix("torch."), "shape": s.shape}
            | {"offset": s.offset}
            for s in self.slots
        ]
        return json.dumps({"num_clients": self.num_clients, "slots": slots}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Layout:
        doc = json.loads(data)
        slots = tuple(
            Slot(s["name"], _dtype(s["dtype"]), tuple(map(int, s["shape"])), int(s["offset"]))
            for s in doc["slots"]
        )
        return cls(int(doc["num_clients"]), slots)


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{name!r} is not a tensor dtype")
    return dtype
