"""How much each client's update counts in the aggregate: never what one client decides.

A reply's ``num_examples`` is a claim. Weighting by it lets one client claiming 10**12
examples own the weighted mean (and a norm bound does not help: the bound limits the
update's norm, the weight multiplies it). The server therefore applies a *weighting*, a
wrapper around each round's aggregator that rewrites the weight before the inner
aggregator sees it:

* ``FixedWeights(sizes)``: the server's own numbers (the partition sizes it built from the
  same config, or a size table it was given); the claim is ignored. ``sizes=None`` gives
  every client weight 1 (uniform, what DP-FedAvg requires). Streaming, O(model) memory.
* ``CappedClaims(ratio)``: the claims, each capped at ``ratio ×`` the round's median claim.
  The median needs every claim of the round, so this wrapper holds the round's updates and
  feeds the inner aggregator when the result is asked for: O(clients × model) memory.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from torch import Tensor

from fedloom.core.errors import ConfigError, UpdateRejected
from fedloom.core.files import read_json
from fedloom.core.tensors import Tensors
from fedloom.server.rows import Refused, UpdateRows, add_rows
from fedloom.server.strategy import Aggregator
from fedloom.server.validate import MAX_EXAMPLES

log = logging.getLogger(__name__)

WeightPolicy = Literal["server", "claimed", "uniform"]
DEFAULT_MAX_WEIGHT_RATIO = 2.0
"""A claimed count weighs at most this many times the round's median claim."""

_UNIFORM_MODES = ("central", "local")
"""privacy.mode values whose DP-FedAvg weighting is uniform whatever the policy."""


class Weighting(Protocol):
    def wrap(self, inner: Aggregator) -> Aggregator:
        """This round's aggregator: ``inner`` fed with the weights this policy allows."""
        ...

    def loss_weight(self, client_id: str, claim: int) -> int:
        """The weight of the client's train_loss in the round's (metric) mean."""
        ...

    def population(self, client_ids: Sequence[str]) -> float | None:
        """Total weight of the whole federation, if known before any round (SCAFFOLD's n)."""
        ...


def _with_weight(meta: Mapping[str, Any], weight: float) -> dict[str, Any]:
    return {**meta, "num_examples": weight}


class _Reweighted:
    """Streams into ``inner``, each update with the weight ``weight_of(client)``."""

    def __init__(self, inner: Aggregator, weight_of: Callable[[str], int]) -> None:
        self.inner = inner
        self.weight_of = weight_of

    @property
    def count(self) -> int:
        return self.inner.count

    def add(self, client_id: str, update: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
        self.inner.add(client_id, update, _with_weight(meta, self.weight_of(client_id)))

    def add_rows(self, rows: UpdateRows) -> Refused:
        """``add`` of every row: the rows whose weight is known go to ``inner`` at once."""
        kept: list[int] = []
        metas: list[dict[str, Any]] = []
        refused: Refused = []
        for i, cid in enumerate(rows.client_ids):
            try:
                metas.append(_with_weight(rows.metas[i], self.weight_of(cid)))
                kept.append(i)
            except UpdateRejected as why:
                refused.append((i, why))
        passed = add_rows(self.inner, rows.select(kept, metas))
        return sorted(refused + [(kept[j], why) for j, why in passed], key=lambda r: r[0])

    def result(self) -> Tensors:
        return self.inner.result()


class FixedWeights:
    """The server's own sizes (``sizes``), or weight 1 for everyone (``sizes=None``)."""

    def __init__(self, sizes: Mapping[str, int] | None = None) -> None:
        self.sizes = None if sizes is None else dict(sizes)

    def weight(self, client_id: str) -> int:
        if self.sizes is None:
            return 1
        size = self.sizes.get(client_id)
        if size is None:
            raise UpdateRejected("the server knows no data size for this client")
        return size

    def wrap(self, inner: Aggregator) -> Aggregator:
        return _Reweighted(inner, self.weight)

    def loss_weight(self, client_id: str, claim: int) -> int:
        return self.weight(client_id)

    def population(self, client_ids: Sequence[str]) -> float | None:
        if self.sizes is None:
            return float(len(client_ids))
        return float(sum(self.sizes.get(cid, 0) for cid in client_ids))


def capped_weights(claims: Sequence[float], ratio: float) -> list[float]:
    """Each claim, capped at ``ratio ×`` the (lower) median claim (float64 arithmetic).

    With claims 10, 20, 10**12 and ratio 2: median 20, cap 40, weights 10, 20, 40.
    """
    if ratio < 1:
        raise ValueError(f"weight ratio must be >= 1, got {ratio}")
    if not claims:
        return []
    # the lower median: with two claims an attacker's own cannot lift the cap
    cap = ratio * float(statistics.median_low(claims))
    return [min(float(c), cap) for c in claims]


class _CappedRound:
    """Holds a round's updates; on ``result()`` feeds ``inner`` with capped claims."""

    def __init__(self, inner: Aggregator, ratio: float) -> None:
        self.inner = inner
        self.ratio = ratio
        self.held: list[tuple[str, Mapping[str, Tensor], Mapping[str, Any]]] = []

    @property
    def count(self) -> int:
        return len(self.held)

    def add(self, client_id: str, update: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
        self.held.append((client_id, update, meta))

    def result(self) -> Tensors:
        if self.inner.count == 0:  # feed the inner aggregator once, however often asked
            claims = [float(m["num_examples"]) for _, _, m in self.held]
            for (cid, update, meta), weight in zip(
                self.held, capped_weights(claims, self.ratio), strict=True
            ):
                self.inner.add(cid, update, _with_weight(meta, weight))
        return self.inner.result()


class CappedClaims:
    """Claimed counts, each at most ``ratio ×`` the round's median claim."""

    def __init__(self, ratio: float = DEFAULT_MAX_WEIGHT_RATIO) -> None:
        if ratio < 1:
            raise ValueError(f"weight ratio must be >= 1, got {ratio}")
        self.ratio = ratio

    def wrap(self, inner: Aggregator) -> Aggregator:
        return _CappedRound(inner, self.ratio)

    def loss_weight(self, client_id: str, claim: int) -> int:
        return 1  # the caps are known only at the round's end: the loss metric is unweighted

    def population(self, client_ids: Sequence[str]) -> float | None:
        return None  # the caps depend on each round's claims


def load_sizes(path: str | Path, client_ids: Sequence[str]) -> dict[str, int]:
    """A sizes file: a JSON object ``{client_id: examples}``, each in [1, MAX_EXAMPLES]."""
    key = "network.client_sizes_file"
    doc = read_json(path, key)
    if not isinstance(doc, dict) or not all(
        isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_EXAMPLES
        for n in doc.values()
    ):
        raise ConfigError([f"{key}: {path} must map client ids to integers in [1, {MAX_EXAMPLES}]"])
    unknown = sorted(set(doc) - set(client_ids))
    if unknown:
        raise ConfigError([f"{key}: {path} names clients not in the run: {unknown[:5]}"])
    missing = sorted(set(client_ids) - set(doc))
    if missing:
        log.warning("%s: no size for client(s) %s: their updates are rejected", key, missing[:5])
    return {str(k): int(v) for k, v in doc.items()}


def weighting_for(
    policy: WeightPolicy,
    *,
    sizes: Mapping[str, int],
    sizes_file: str | None = None,
    max_ratio: float = DEFAULT_MAX_WEIGHT_RATIO,
    privacy_mode: str = "none",
) -> Weighting:
    """The weighting a run uses.

    ``sizes`` are the partition sizes the server built itself; ``sizes_file`` replaces them.
    Central and local DP weight uniformly whatever the policy (DP-FedAvg's fixed weights);
    any other DP mode never uses a claim: ``claimed`` becomes ``uniform`` there.
    """
    if privacy_mode in _UNIFORM_MODES:
        return FixedWeights(None)
    if policy == "claimed" and privacy_mode != "none":
        log.warning(
            "privacy.mode=%s: weights never come from a client's claim; weighting uniformly "
            "(set network.client_weights=server to use the server's partition sizes)",
            privacy_mode,
        )
        return FixedWeights(None)
    if policy == "uniform":
        return FixedWeights(None)
    if policy == "claimed":
        return CappedClaims(max_ratio)
    if sizes_file is not None:
        return FixedWeights(load_sizes(sizes_file, list(sizes)))
    return FixedWeights(sizes)
