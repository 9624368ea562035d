"""A federated dataset whose clients' data are made on demand, one client at a time.

A federation of 100,000 clients cannot hold every client's samples (or even one index
tensor per client): ``OnDemandFederatedDataset`` keeps only each client's size and a
function that builds client k's data, called when client k trains. Its train split is
empty; ``client_indices`` are client k's positions in a virtual train split (the
clients' parts end to end), made when asked, so code that reads sizes from them works
unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import cast, overload

import numpy as np
import torch

from fedloom.core.errors import DataError
from fedloom.data.base import FederatedDataset, TensorData, _check_split

ClientMaker = Callable[[int], TensorData]
"""Client k's local data: a pure function of k (and of what the maker closed over)."""


class ClientRanges(Sequence[torch.Tensor]):
    """``ranges[k]``: ``arange(start_k, start_k + size_k)``, built on each access."""

    def __init__(self, sizes: np.ndarray) -> None:
        self.sizes = sizes
        self.starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.sizes)

    @overload
    def __getitem__(self, k: int) -> torch.Tensor: ...

    @overload
    def __getitem__(self, k: slice) -> list[torch.Tensor]: ...

    def __getitem__(self, k: int | slice) -> torch.Tensor | list[torch.Tensor]:
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        start = int(self.starts[k])
        return torch.arange(start, start + int(self.sizes[k]), dtype=torch.int64)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (self[k] for k in range(len(self)))


class OnDemandFederatedDataset(FederatedDataset):
    """Clients whose data ``make_client(k)`` builds when asked; see the module docstring.

    ``generated`` counts the calls (how many times some client's data were built).
    """

    sizes: np.ndarray
    make_client: ClientMaker
    generated: int

    def __init__(
        self,
        *,
        sizes: np.ndarray,
        make_client: ClientMaker,
        test: TensorData,
        num_classes: int,
        input_shape: tuple[int, ...],
    ) -> None:
        sizes = np.asarray(sizes, dtype=np.int64)
        if sizes.ndim != 1 or not len(sizes):
            raise DataError("an on-demand federated dataset needs at least one client size")
        if int(sizes.min()) < 0:
            raise DataError(f"client sizes must be >= 0, found {int(sizes.min())}")
        empty = TensorData(
            torch.empty((0, *input_shape), dtype=test.x.dtype),
            torch.empty((0, *test.y.shape[1:]), dtype=test.y.dtype),
        )
        # a frozen dataclass: each field is set once, here, as its own __init__ would
        fields = {
            "train": empty,
            "test": test,
            "client_indices": cast(list[torch.Tensor], ClientRanges(sizes)),
            "num_classes": num_classes,
            "input_shape": tuple(input_shape),
            "sizes": sizes,
            "make_client": make_client,
            "generated": 0,
        }
        for name, value in fields.items():
            object.__setattr__(self, name, value)
        self.__post_init__()

    def __post_init__(self) -> None:
        # the splits are checked as in the eager dataset; the clients' parts of the virtual
        # train split are disjoint and cover it by construction
        for name, split in (("train", self.train), ("test", self.test)):
            _check_split(name, split, self.num_classes, self.input_shape)

    def client(self, k: int) -> TensorData:
        """Client ``k``'s local training data, built now."""
        if not 0 <= k < self.num_clients:
            raise DataError(f"client {k} does not exist; clients are 0..{self.num_clients - 1}")
        data = self.make_client(k)
        object.__setattr__(self, "generated", self.generated + 1)
        if len(data) != int(self.sizes[k]):
            raise DataError(
                f"client {k}'s data have {len(data)} samples, but its size is {self.sizes[k]}"
            )
        return data

    def label_histogram(self) -> np.ndarray:
        raise DataError(
            "an on-demand federated dataset has no label histogram: it would build every "
            "client's data"
        )
