"""A client's view of a user's ``torch.utils.data.Dataset``, read lazily.

``LazyData`` holds the dataset and the positions a client owns (a tensor of indices, never
a copy of the items): a batch reads exactly its items with ``dataset[i]``, so a
transform inside ``__getitem__`` (augmentation) runs on every access and nothing is
materialized. Items are ``(x, y)`` pairs (``x`` may be a dict), or dicts of tensors
(Hugging Face style) whose target is the entry named ``target_key`` (``data.target_key``,
default ``labels``); the rest of the dict is the model's input, passed as keyword
arguments (``model(**inputs)``). Items are merged by ``collate`` (torch's
``default_collate`` unless given, e.g. ``pad_collate`` for variable-length sequences),
through a ``DataLoader`` with ``data.workers`` worker processes (0: read in the training
process) and ``data.pin_memory``.

The in-memory tensors of ``TensorData`` stay the fast path; this is for data that does
not fit it (files read on demand, per-access transforms, dicts, ragged sequences).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, default_collate

from fedloom.core.errors import DataError

Collate = Callable[[list[Any]], Any]
"""``collate(items) -> batch``: merges a list of dataset items into one batch."""
Inputs = Tensor | dict[str, Tensor]
"""What a model is called with: a tensor, or a dict of them (``model(**inputs)``)."""
Batch = tuple[Inputs, Tensor]
IGNORE_INDEX = -100
"""The target value cross-entropy skips (its ``ignore_index``): ``pad_collate``'s padding."""


@dataclass(frozen=True)
class LoaderSettings:
    """How batches are read: the collate function and the ``DataLoader`` settings."""

    collate: Collate | None = None
    """None: torch's ``default_collate`` (items of one shape)."""
    target_key: str = "labels"
    """In dict items, the entry holding the target."""
    workers: int = 0
    """``DataLoader`` worker processes; 0 reads in the training process."""
    pin_memory: bool = False
    """Page-locked host batches (only used when training on CUDA)."""


@dataclass(frozen=True)
class LazyData:
    """Positions ``indices`` of ``dataset``, read on demand; ``targets`` (aligned with
    ``indices``) when the dataset publishes them (a ``.targets`` attribute, a Hugging
    Face label column), else None: then label-based splits and label counts are
    unavailable, and nothing is read to find them."""

    dataset: Dataset[Any]
    indices: Tensor
    targets: Tensor | None = None
    settings: LoaderSettings = field(default_factory=LoaderSettings)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self) -> None:
        if self.indices.dtype != torch.int64 or self.indices.ndim != 1:
            raise DataError("LazyData.indices must be a 1-D int64 tensor")
        if self.targets is not None and self.targets.shape[:1] != self.indices.shape:
            raise DataError(
                f"LazyData has {len(self.indices)} positions but {self.targets.shape[0]} targets"
            )

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    @property
    def targets_known(self) -> bool:
        return self.targets is not None

    @property
    def has_labels(self) -> bool:
        """Whether the known targets are class labels (int64, one per sample)."""
        t = self.targets
        return t is not None and t.dtype == torch.int64 and t.ndim == 1

    @property
    def y(self) -> Tensor:
        """The targets, when the dataset published them."""
        if self.targets is None:
            raise DataError(
                f"the targets of {type(self.dataset).__name__} are unknown without reading "
                "every item; give the dataset a .targets attribute (one per item)"
            )
        return self.targets

    @property
    def x(self) -> Tensor:
        raise DataError(
            f"this feature needs the inputs in memory, but {type(self.dataset).__name__} is "
            "read lazily; pass a TensorDataset (tensors) instead"
        )

    def subset(self, idx: Tensor) -> LazyData:
        """The samples at ``idx`` (positions in this view), still unread."""
        targets = None if self.targets is None else self.targets[idx]
        return replace(self, indices=self.indices[idx], targets=targets)

    def to(self, device: torch.device) -> LazyData:
        """This view, with batches delivered on ``device``."""
        return self if self.device == device else replace(self, device=device)

    def batch(self, idx: Tensor) -> Batch:
        """The inputs and targets of the samples at ``idx``, on this view's device."""
        items = [self.dataset[i] for i in self.indices[idx].tolist()]
        batch = split_batch(collate_items(items, self.settings.collate), self.settings.target_key)
        return to_device(batch, self.device)

    def example(self) -> Inputs:
        """The first sample's inputs as a batch of one (on the CPU), for model checks."""
        items = [self.dataset[int(self.indices[0])]]
        return split_batch(collate_items(items, self.settings.collate), self.settings.target_key)[0]

    def batches(self, index_batches: Iterable[Tensor]) -> Iterator[tuple[Tensor, Batch | None]]:
        """``(idx, batch)`` for each index tensor, in order; an empty one gives None.

        The index batches are all drawn first, so the random draws of a round (shuffling,
        then augmentation) come in the same order whatever ``workers`` is."""
        plan = list(index_batches)
        if self.settings.workers == 0:
            for idx in plan:
                yield idx, (self.batch(idx) if len(idx) else None)
            return
        pending = collections.deque(plan)
        loader = DataLoader(
            self.dataset,
            batch_sampler=[self.indices[idx].tolist() for idx in plan],
            num_workers=self.settings.workers,
            collate_fn=_Collator(self.settings.collate, self.settings.target_key),
            pin_memory=self.settings.pin_memory and self.device.type == "cuda",
        )
        for batch in loader:
            yield pending.popleft(), None if batch is None else to_device(batch, self.device)

    def chunks(self, size: int) -> Iterator[Batch]:
        """Consecutive batches of ``size`` covering the view (evaluation's order)."""
        order = torch.arange(len(self))
        for _, batch in self.batches(order[s : s + size] for s in range(0, len(self), size)):
            if batch is not None:
                yield batch


@dataclass(frozen=True)
class _Collator:
    """A picklable collate for worker processes: items to ``(inputs, target)``."""

    collate: Collate | None
    target_key: str

    def __call__(self, items: list[Any]) -> Batch | None:
        if not items:
            return None  # an empty Poisson batch (DP-SGD): a noise-only step
        return split_batch(collate_items(items, self.collate), self.target_key)


def collate_items(items: list[Any], collate: Collate | None) -> Any:
    """``collate(items)``, with a clear error for items torch cannot stack."""
    if collate is not None:
        return collate(items)
    try:
        return default_collate(items)
    except RuntimeError as error:  # "stack expects each tensor to be equal size"
        raise DataError(
            f"the items cannot be stacked into a batch ({str(error).splitlines()[0]}); for "
            "variable-length items pass collate=fedloom.data.views.pad_collate() or your own"
        ) from None


def split_batch(batch: Any, target_key: str) -> Batch:
    """A collated batch as ``(inputs, target)``: a pair, or a dict holding the target
    under ``target_key``. float64 inputs become float32; integers (token ids) are kept."""
    if isinstance(batch, Mapping):
        if target_key not in batch:
            raise DataError(
                f"dict batches have keys {sorted(batch)}, none named {target_key!r} "
                f"(data.target_key)"
            )
        inputs = {k: _input(k, v) for k, v in batch.items() if k != target_key}
        return inputs, _target(batch[target_key])
    if isinstance(batch, Sequence) and not isinstance(batch, str) and len(batch) == 2:
        x, y = batch
        if isinstance(x, Mapping):
            return {k: _input(k, v) for k, v in x.items()}, _target(y)
        return _input("x", x), _target(y)
    raise DataError(
        f"a batch is a {type(batch).__name__}; items must be (x, y) pairs or dicts with "
        "a target entry (data.target_key)"
    )


def _input(name: str, value: Any) -> Tensor:
    if not isinstance(value, Tensor):
        raise DataError(f"batch input {name!r} is a {type(value).__name__}, not a tensor")
    if value.is_complex():
        raise DataError(f"batch input {name!r} is complex; fedloom's inputs are real-valued")
    return value.float() if value.dtype == torch.float64 else value


def _target(value: Any) -> Tensor:
    if not isinstance(value, Tensor):
        raise DataError(f"batch targets are a {type(value).__name__}, not a tensor")
    if value.dtype == torch.bool or value.is_complex():
        raise DataError(f"batch targets are {value.dtype}, not class indices or numbers")
    return value.float() if value.dtype.is_floating_point else value.long()


def to_device(batch: Batch, device: torch.device) -> Batch:
    """A batch moved to ``device`` (nothing copied when it is there already)."""
    x, y = batch
    moved = {k: v.to(device) for k, v in x.items()} if isinstance(x, dict) else x.to(device)
    return moved, y.to(device)


def pad_collate(
    pad: float = 0, target_pad: float = IGNORE_INDEX, target_key: str = "labels"
) -> Collate:
    """A collate for variable-length sequences (torch's ``pad_sequence``, batch first).

    For ``(x, y)`` items: ``x`` padded with ``pad``; ``y`` stacked, or padded with
    ``target_pad`` when its length varies too (next tokens). For dict items: every entry
    whose length varies is padded (the ``target_key`` entry with ``target_pad``, which
    cross-entropy ignores by default), and an ``attention_mask`` (1 on real positions)
    is added when there is none.
    """

    def collate(items: list[Any]) -> Any:
        if items and isinstance(items[0], Mapping):
            return _pad_dicts(items, pad, target_pad, target_key)
        xs, ys = zip(*items, strict=True)
        return _padded(list(xs), pad), _padded(list(ys), target_pad)

    return collate


def _padded(values: list[Any], pad: float) -> Tensor:
    tensors = [v if isinstance(v, Tensor) else torch.as_tensor(v) for v in values]
    if all(t.shape == tensors[0].shape for t in tensors):
        return torch.stack(tensors)
    if any(t.ndim == 0 for t in tensors):
        raise DataError("pad_collate: a scalar cannot be padded to a sequence")
    return pad_sequence(tensors, batch_first=True, padding_value=pad)


def _pad_dicts(
    items: list[Any], pad: float, target_pad: float, target_key: str
) -> dict[str, Tensor]:
    keys = list(items[0])
    if any(list(item) != keys for item in items):
        raise DataError("pad_collate: dict items must all have the same keys")
    out = {}
    for key in keys:
        value = 0 if key == "attention_mask" else target_pad if key == target_key else pad
        out[key] = _padded([item[key] for item in items], value)
    if "attention_mask" not in out:
        first = next((k for k in keys if k != target_key), None)
        if first is None:
            raise DataError(f"pad_collate: dict items hold only the target {target_key!r}")
        lengths = torch.tensor([len(torch.as_tensor(item[first])) for item in items])
        width = out[first].shape[1] if out[first].ndim > 1 else 1
        out["attention_mask"] = (torch.arange(width) < lengths[:, None]).long()
    return out
