from __future__ import annotations

import math

import pytest

from fedloom.secure import graph


def test_neighbor_count_is_c_log2_n_even_and_capped() -> None:
    assert graph.neighbor_count(16) == 15  # 6 * 4 = 24 > 15: the complete graph
    assert graph.neighbor_count(64) == 36  # 6 * 6
    assert graph.neighbor_count(100) == 40  # ceil(6 * 6.64) = 40
    assert graph.neighbor_count(256) == 48
    assert graph.neighbor_count(1024, c=3.0) == 30
    assert graph.default_threshold(36) == 19
    with pytest.raises(ValueError, match="at least 2 clients"):
        graph.neighbor_count(1)


def test_ring_graph_is_regular_symmetric_and_seeded() -> None:
    ids = list(range(100, 150))
    seed = bytes(32)
    nbrs = graph.neighbors(seed, ids, 10)
    assert set(nbrs) == set(ids)
    for u, mine in nbrs.items():
        assert len(mine) == 10 and u not in mine
        assert all(u in nbrs[v] for v in mine)
    assert graph.neighbors(seed, list(reversed(ids)), 10) == nbrs  # order of ids is irrelevant
    assert graph.neighbors(bytes([1]) + bytes(31), ids, 10) != nbrs
    complete = graph.neighbors(seed, ids[:5], 10)
    assert all(len(v) == 4 for v in complete.values())


def test_commitment_binds_the_seed() -> None:
    assert graph.commitment(bytes(32)) != graph.commitment(bytes(31) + b"\x01")
    assert len(graph.commitment(bytes(32))) == 32


def test_failure_probability_matches_a_direct_binomial_sum() -> None:
    # k = 4, t = 3, half drop: fewer than 3 survivors = 1 - P(3) - P(4) = 1 - 5/16 = 11/16
    assert graph.neighborhood_failure(4, 3, 0.5) == pytest.approx(11 / 16)
    k, t, d = 36, 19, 0.1
    direct = sum(math.comb(k, s) * (1 - d) ** s * d ** (k - s) for s in range(t))
    assert graph.neighborhood_failure(k, t, d) == pytest.approx(direct, rel=1e-9)
    assert graph.round_failure_bound(64, k, t, d) == pytest.approx(64 * direct, rel=1e-9)
    assert graph.round_failure_bound(64, k, t, d) < 1e-6  # the design target at 10% dropout
