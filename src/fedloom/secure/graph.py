"""The SecAgg+ neighbour graph, its degree and threshold, and its failure probability.

Each client masks with and shares its secrets among ``k`` neighbours only, not all
``n - 1`` peers (Bell et al. 2020). The graph is a Harary ring: the clients are placed
on a ring in an order drawn from public randomness that the server committed to before
it saw any key, and each is joined to the ``k/2`` nearest on either side. So the graph
is exactly ``k``-regular and no party picks it alone.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from scipy.stats import binom

DEFAULT_C = 6.0  # k = c * log2(n); the failure table in docs/secure.md justifies it


def neighbor_count(n_clients: int, c: float = DEFAULT_C) -> int:
    """Degree ``k``: ``c·log2(n)`` rounded up to even, at most ``n - 1`` (complete graph)."""
    if n_clients < 2:
        raise ValueError(f"secure aggregation needs at least 2 clients, got {n_clients}")
    k = math.ceil(c * math.log2(n_clients))
    k += k % 2
    return min(n_clients - 1, max(2, k))


def default_threshold(neighbors: int) -> int:
    """A strict majority of the neighbours: ``floor(k/2) + 1``.

    Above ``k/2`` a server that lies about who dropped cannot collect both the self-mask
    share and the key share of one client from honest neighbours, each of whom reveals
    only one of the two.
    """
    return neighbors // 2 + 1


def commitment(graph_seed: bytes) -> bytes:
    """What the server publishes before the keys: SHA-256 of the graph seed."""
    return hashlib.sha256(b"fedloom-secagg/v1|graph|" + graph_seed).digest()


def ring_order(graph_seed: bytes, ids: Sequence[int]) -> list[int]:
    """The clients in ring order: sorted by a hash keyed with the public seed."""

    def key(client: int) -> bytes:
        return hashlib.sha256(graph_seed + client.to_bytes(8, "big")).digest()

    return sorted(ids, key=key)


def neighbors(graph_seed: bytes, ids: Sequence[int], k: int) -> dict[int, frozenset[int]]:
    """Every client's neighbour set in the ring graph of degree ``min(k, n-1)``."""
    ring = ring_order(graph_seed, sorted(set(ids)))
    n = len(ring)
    if k >= n - 1:
        return {u: frozenset(ring) - {u} for u in ring}
    half = k // 2
    position = {u: i for i, u in enumerate(ring)}
    return {
        u: frozenset(ring[(position[u] + d) % n] for d in range(-half, half + 1) if d != 0)
        for u in ring
    }


def neighborhood_failure(k: int, threshold: int, dropout: float) -> float:
    """P(fewer than ``threshold`` of ``k`` neighbours survive), dropouts independent."""
    return float(binom.cdf(threshold - 1, k, 1.0 - dropout))


def round_failure_bound(n_clients: int, k: int, threshold: int, dropout: float) -> float:
    """Union bound on a round failing: some client's neighbourhood falls below threshold."""
    return min(1.0, n_clients * neighborhood_failure(k, threshold, dropout))
