"""Datasets: one split as two in-memory tensors (the fast path) or a lazily read view
of a user's Dataset (``fedloom.data.views``), and a federated view over a train split.

Federated simulation indexes the same split thousands of times (every client, every round),
so tensor data lives in two dense tensors and a client is a tensor of indices, never a copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from fedloom.core.errors import DataError
from fedloom.data.views import LazyData, LoaderSettings


@dataclass(frozen=True)
class TensorData:
    """One split held in memory: ``x`` ``(N, *input_shape)`` (float32 features, or int64
    token ids), ``y`` ``(N, ...)``: int64 class labels ``(N,)`` for classification, float32
    targets for regression, int64 next tokens ``(N, T)`` for a language model."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or not isinstance(self.y, torch.Tensor):
            raise DataError(
                f"TensorData needs two torch tensors, got x={type(self.x).__name__}, "
                f"y={type(self.y).__name__}; use from_torch_dataset() to convert a Dataset"
            )
        for name, t in (("x", self.x), ("y", self.y)):
            if t.dtype not in (torch.float32, torch.int64):
                raise DataError(
                    f"TensorData.{name} must be float32 or int64, got {t.dtype}; "
                    f"call {name}.float() or {name}.long()"
                )
        if self.y.ndim < 1:
            raise DataError(f"TensorData.y must have shape (N, ...), got {tuple(self.y.shape)}")
        if self.x.ndim < 1 or self.x.shape[0] != self.y.shape[0]:
            raise DataError(
                f"TensorData.x has shape {tuple(self.x.shape)} but y has {self.y.shape[0]} "
                "targets; the first dimension of x must be the sample count"
            )

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def has_labels(self) -> bool:
        """Whether ``y`` holds one class label per sample (int64, shape ``(N,)``)."""
        return self.y.dtype == torch.int64 and self.y.ndim == 1

    def to(self, device: torch.device) -> TensorData:
        """This split on ``device`` (itself when it is already there)."""
        if self.x.device == device and self.y.device == device:
            return self
        return TensorData(self.x.to(device), self.y.to(device))

    def subset(self, idx: torch.Tensor) -> TensorData:
        """The samples at ``idx`` (an int64 index tensor), as a new ``TensorData``."""
        return TensorData(self.x[idx], self.y[idx])

    @property
    def targets_known(self) -> bool:
        return True

    def batches(
        self, index_batches: Iterable[torch.Tensor]
    ) -> Iterator[tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]]:
        """``(idx, (x[idx], y[idx]))`` for each index tensor: one gather each, no loader."""
        for idx in index_batches:
            yield idx, (self.x[idx], self.y[idx])

    def chunks(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive batches of ``size`` (views, no copy), in order."""
        for start in range(0, len(self), size):
            yield self.x[start : start + size], self.y[start : start + size]

    def example(self) -> torch.Tensor:
        """The first sample's inputs as a batch of one."""
        return self.x[:1]


Split: TypeAlias = TensorData | LazyData
"""One split of data: in memory (``TensorData``) or read on demand (``LazyData``)."""


@dataclass(frozen=True)
class FederatedDataset:
    """A train split divided among clients, plus a centralised held-out test split.

    ``client_indices[k]`` holds the sorted int64 positions in ``train`` owned by client k;
    the lists are disjoint and together cover ``train`` (checked on construction).
    """

    train: Split
    test: Split
    client_indices: list[torch.Tensor]
    num_classes: int
    input_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        for split_name, split in (("train", self.train), ("test", self.test)):
            _check_split(split_name, split, self.num_classes, self.input_shape)
        _check_disjoint_cover(self.client_indices, len(self.train))

    @property
    def num_clients(self) -> int:
        return len(self.client_indices)

    def client(self, k: int) -> Split:
        """Client ``k``'s local training data."""
        if not 0 <= k < self.num_clients:
            raise DataError(f"client {k} does not exist; clients are 0..{self.num_clients - 1}")
        return self.train.subset(self.client_indices[k])

    def label_histogram(self) -> np.ndarray:
        """Label counts per client, shape ``(num_clients, num_classes)``, dtype int64."""
        labels = self.train.y.numpy()
        rows = [
            np.bincount(labels[idx.numpy()], minlength=self.num_classes)
            for idx in self.client_indices
        ]
        return np.stack(rows).astype(np.int64)


def _check_split(name: str, split: Split, num_classes: int, input_shape: tuple[int, ...]) -> None:
    if num_classes < 1:
        raise DataError(f"num_classes must be at least 1, got {num_classes}")
    if isinstance(split, LazyData):
        if split.targets is not None and split.has_labels:
            _check_labels(name, split.targets, num_classes)
        return  # inputs unread: their shape is checked on the model's first batch
    if not isinstance(split, TensorData):
        raise DataError(
            f"FederatedDataset.{name} must be a TensorData or LazyData, got {type(split).__name__}"
        )
    if tuple(split.x.shape[1:]) != tuple(input_shape):
        raise DataError(
            f"{name} inputs have shape {tuple(split.x.shape[1:])} but input_shape is {input_shape}"
        )
    if split.y.dtype != torch.int64:
        return  # regression targets: no class range
    _check_labels(name, split.y, num_classes)


def _check_labels(name: str, y: torch.Tensor, num_classes: int) -> None:
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError(
            f"{name} labels span {int(y.min())}..{int(y.max())}, "
            f"outside 0..{num_classes - 1} (num_classes={num_classes})"
        )


def _check_disjoint_cover(client_indices: list[torch.Tensor], num_train: int) -> None:
    # Cheap (one sort of N ints) and it catches the worst silent bug in FL simulation:
    # a sample seen by two clients, or never seen at all.
    if not client_indices:
        raise DataError("client_indices is empty: a federated dataset needs at least one client")
    for k, idx in enumerate(client_indices):
        if not isinstance(idx, torch.Tensor) or idx.dtype != torch.int64 or idx.ndim != 1:
            raise DataError(f"client_indices[{k}] must be a 1-D int64 tensor")
    assigned = torch.cat(client_indices)
    if assigned.numel() != num_train or not torch.equal(
        torch.sort(assigned).values, torch.arange(num_train)
    ):
        distinct = int(torch.unique(assigned).numel())
        raise DataError(
            f"client_indices must be disjoint and cover the train split: {assigned.numel()} "
            f"indices assigned, {distinct} distinct, train has {num_train} samples"
        )


def as_split(
    ds: Dataset[Any],
    *,
    token_inputs: bool = False,
    settings: LoaderSettings | None = None,
) -> Split:
    """A user's dataset as one split: a ``TensorDataset`` in memory (the fast path, as
    ``from_torch_dataset``), any other map-style ``Dataset`` (or any dataset when
    ``settings`` has a collate function) as a ``LazyData`` view that reads items only
    when a batch needs them. Its ``.targets`` (a ``TensorDataset``'s second tensor), when
    it has them, are taken as the labels: the Dirichlet and shards partitions need them."""
    settings = settings or LoaderSettings()
    if isinstance(ds, TensorDataset) and settings.collate is None:
        return from_torch_dataset(ds, token_inputs=token_inputs)
    size = _size(ds, "fedloom")
    if isinstance(ds, TensorDataset) and len(ds.tensors) == 2:
        targets: torch.Tensor | None = _standard(ds.tensors[1].detach(), "y")
    else:
        targets = published_targets(ds, size)
    return LazyData(ds, torch.arange(size), targets, settings)


def published_targets(ds: Dataset[Any], size: int) -> torch.Tensor | None:
    """``ds.targets`` (torchvision's convention) as int64 labels or float32 values, if
    the dataset has one target per item; None otherwise (nothing is read to find them)."""
    targets = getattr(ds, "targets", None)
    if targets is None:
        return None
    try:
        t = torch.as_tensor(np.asarray(targets))
    except (TypeError, ValueError, RuntimeError) as err:
        raise DataError(f"{type(ds).__name__}.targets is not numeric ({err})") from None
    if t.ndim < 1 or t.shape[0] != size:
        raise DataError(
            f"{type(ds).__name__}.targets holds {t.shape[0] if t.ndim else 0} values "
            f"for {size} items"
        )
    if t.dtype == torch.bool:
        raise DataError(f"{type(ds).__name__}.targets are booleans, not class indices")
    return _standard(t, "targets")


def from_torch_dataset(ds: Dataset[Any], *, token_inputs: bool = False) -> TensorData:
    """Materialise a map-style torch ``Dataset`` of ``(x, y)`` pairs as one ``TensorData``.

    A ``TensorDataset`` is converted without iterating; any other dataset is read item by
    item exactly once. Values are kept as they are (no rescaling: apply your transforms
    in the dataset). ``x`` becomes float32, or int64 token ids with ``token_inputs`` (int64
    inputs always stay int64: ids for an embedding);
    ``y`` int64 when it holds integers (a class index, next tokens), else float32 (a
    regression target, a number or a vector).
    """
    if isinstance(ds, TensorDataset):
        return _from_tensor_dataset(ds, token_inputs)
    return _from_items(ds, token_inputs)


def _from_tensor_dataset(ds: TensorDataset, token_inputs: bool) -> TensorData:
    if len(ds.tensors) != 2:
        raise DataError(f"expected a TensorDataset of (x, y), got {len(ds.tensors)} tensors")
    x, y = ds.tensors
    if y.dtype == torch.bool:
        raise DataError("targets are booleans, not class indices or numbers")
    return TensorData(_inputs(x.detach(), token_inputs), _standard(y.detach(), "y"))


def _standard(t: torch.Tensor, name: str) -> torch.Tensor:
    """float32 for floating-point values, int64 for integers."""
    if t.is_complex():
        raise DataError(f"{name} is complex; fedloom's data are real-valued")
    return t.to(torch.float32) if t.dtype.is_floating_point else t.to(torch.int64)


def _inputs(x: torch.Tensor, token_inputs: bool) -> torch.Tensor:
    if x.dtype == torch.int64:
        return x  # ids (an embedding's input); smaller integers are pixel values
    if token_inputs:
        if x.dtype.is_floating_point:
            raise DataError(f"token inputs must be integer ids, got dtype {x.dtype}")
        return x.to(torch.int64)
    return x.to(torch.float32)


def _size(ds: Dataset[Any], reader: str) -> int:
    """``len(ds)``, which must exist and be positive (``reader`` names who needs it)."""
    try:
        size = len(ds)  # type: ignore[arg-type]
    except TypeError as err:
        raise DataError(
            f"{type(ds).__name__} has no len(); {reader} needs a map-style Dataset"
        ) from err
    if size == 0:
        raise DataError(f"{type(ds).__name__} is empty")
    return size


def _from_items(ds: Dataset[Any], token_inputs: bool) -> TensorData:
    size = _size(ds, "from_torch_dataset")
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    for i in range(size):
        x, y = _unpack_item(ds[i], i)
        if xs and x.shape != xs[0].shape:
            raise DataError(
                f"item {i} has x of shape {tuple(x.shape)} but item 0 has {tuple(xs[0].shape)}; "
                "all inputs must share one shape"
            )
        if ys and y.shape != ys[0].shape:
            raise DataError(
                f"item {i} has y of shape {tuple(y.shape)} but item 0 has {tuple(ys[0].shape)}"
            )
        xs.append(x)
        ys.append(y)
    return TensorData(_inputs(torch.stack(xs), token_inputs), _standard(torch.stack(ys), "y"))


def _unpack_item(item: object, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(item, tuple | list) or len(item) != 2:
        raise DataError(f"item {i} is a {type(item).__name__}, expected a pair (x, y)")
    return _as_input_tensor(item[0], i), _as_target(item[1], i)


def _as_input_tensor(x: object, i: int) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        tensor = x.detach()
    else:
        try:
            array = np.asarray(x)
        except ValueError as err:  # ragged nested lists
            raise DataError(f"item {i}: x is not tensor-like ({err})") from err
        if array.dtype.kind not in "biuf":
            raise DataError(f"item {i}: x of type {type(x).__name__} is not a numeric tensor")
        tensor = torch.as_tensor(array.copy())
    if tensor.is_complex():
        raise DataError(f"item {i}: x is complex; fedloom inputs are real-valued")
    return tensor


def _as_target(y: object, i: int) -> torch.Tensor:
    """A class index, a number or a vector of them (a regression target, next tokens)."""
    # bool is an int subclass, but a True/False "label" is almost always a bug upstream.
    if isinstance(y, bool | np.bool_) or (
        isinstance(y, torch.Tensor | np.ndarray) and y.dtype in (torch.bool, np.bool_)
    ):
        raise DataError(f"item {i}: target {y!r} is a boolean, not a class index or number")
    try:
        return _as_input_tensor(y, i)
    except DataError:
        raise DataError(f"item {i}: target {y!r} is not a number or a tensor of them") from None
