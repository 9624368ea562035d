"""The masked sum equals the plain sum exactly, with and without dropouts."""

from __future__ import annotations

import numpy as np
import pytest

from fedloom.core.errors import ConfigError
from fedloom.secure import graph
from fedloom.secure.encoding import (
    EncodingConfig,
    decode_aggregate,
    encode_input,
    levels,
    modulus_bits,
)
from fedloom.secure.errors import SecAggAborted
from fedloom.secure.server import SecAggServer, ServerStage
from fedloom.secure.simulate import Dropouts, run_round

from .conftest import SEED, make_round, plain_sum


@pytest.mark.parametrize(
    ("n", "bits", "neighbors"),
    [(2, 8, None), (5, 13, None), (16, 32, None), (40, 64, 8), (40, 20, None)],
)
def test_sum_is_exact_without_dropouts(n: int, bits: int, neighbors: int | None) -> None:
    rng = np.random.default_rng(n)
    ids = [3 * i + 1 for i in range(n)]  # ids need not be 0..n-1
    r = make_round(ids, 64, bits, rng, neighbors)
    r.unmask(r.mask(r.share(r.advertise())))
    result = r.server.finish()
    assert result.survivors == tuple(ids) and result.dropped == ()
    assert result.total.tolist() == plain_sum(r.inputs, ids, bits)


def _spread(n: int, k: int, step: int) -> list[int]:
    """Every ``step``-th client in ring order: each neighbourhood loses at most ceil(k/step)."""
    return graph.ring_order(SEED, list(range(n)))[::step]


def test_complete_graph_survives_k_minus_t_dropouts_after_masked_input() -> None:
    n, bits = 16, 24
    rng = np.random.default_rng(0)
    r = make_round(range(n), 50, bits, rng)
    k, t = r.server.neighbors, r.server.threshold
    assert (k, t) == (15, 8)
    requests = r.mask(r.share(r.advertise()))
    lost = list(range(k - t))  # 7 of 16 go silent before unmask
    r.unmask(requests, silent=lost)
    result = r.server.finish()
    assert result.survivors == tuple(range(n))  # their masked inputs count
    assert result.total.tolist() == plain_sum(r.inputs, range(n), bits)


def test_sparse_graph_recovers_dropouts_before_and_after_masked_input() -> None:
    n, k, bits = 48, 8, 20  # threshold 5: each neighbourhood may lose k - t = 3
    rng = np.random.default_rng(1)
    r = make_round(range(n), 40, bits, rng, neighbors=k)
    dropped = _spread(n, k, 3)  # at most 3 of any 8 consecutive ring neighbours
    before_mask, after_mask = dropped[::2], dropped[1::2]
    forwarded = r.share(r.advertise())
    requests = r.mask(forwarded, silent=before_mask)
    r.unmask(requests, silent=after_mask)
    result = r.server.finish()
    survivors = sorted(set(range(n)) - set(before_mask))
    assert result.survivors == tuple(survivors)
    assert result.dropped == tuple(sorted(before_mask))
    assert result.total.tolist() == plain_sum(r.inputs, survivors, bits)


def test_dropouts_before_sharing_keys_are_simply_excluded() -> None:
    n, bits = 12, 16
    rng = np.random.default_rng(2)
    r = make_round(range(n), 30, bits, rng)
    directories = r.advertise(silent=[0])  # never advertised
    requests = r.mask(r.share(directories, silent=[5, 6]))  # advertised, never shared
    r.unmask(requests)
    result = r.server.finish()
    included = [u for u in range(n) if u not in (0, 5, 6)]
    assert result.survivors == tuple(included) and result.dropped == ()
    assert result.total.tolist() == plain_sum(r.inputs, included, bits)


def test_the_simulated_transport_gives_the_same_exact_sum() -> None:
    n, bits, length = 20, 18, 257
    rng = np.random.default_rng(3)
    inputs = {u: rng.integers(0, 2**bits, length, dtype=np.uint64) for u in range(n)}
    server = SecAggServer(1, list(range(n)), length, bits, neighbors=10)
    drops = Dropouts(
        before_advertise=frozenset({0}),
        before_shares=frozenset({1}),
        before_masked=frozenset({2}),
        before_unmask=frozenset({3}),
    )
    result, traffic = run_round(server, inputs, drops)
    survivors = [u for u in range(n) if u not in (0, 1, 2)]
    assert result.survivors == tuple(survivors) and result.dropped == (2,)
    assert result.total.tolist() == plain_sum(inputs, survivors, bits)
    assert traffic.up[10] > length * 18 / 8  # the masked vector dominates: 18 bits each


def test_one_dropout_too_many_aborts_cleanly() -> None:
    n, bits = 16, 24
    r = make_round(range(n), 20, bits, np.random.default_rng(4))
    requests = r.mask(r.share(r.advertise()))
    r.unmask(requests, silent=list(range(8)))  # k - t + 1 = 8 silent: 7 shares < 8
    with pytest.raises(SecAggAborted, match=r"round 7 aborted: 7 shares of the self-mask seed"):
        r.server.finish()
    assert r.server.stage is ServerStage.DONE


def test_too_few_key_sharers_abort_before_any_input_is_sent() -> None:
    r = make_round(range(10), 20, 16, np.random.default_rng(5))
    with pytest.raises(SecAggAborted, match="has 4 neighbours with shares, needs 5"):
        r.share(r.advertise(), silent=list(range(5)))


def test_too_few_masked_inputs_abort() -> None:
    r = make_round(range(6), 20, 16, np.random.default_rng(6), neighbors=4, threshold=3)
    with pytest.raises(SecAggAborted, match="2 masked inputs; threshold 3"):
        r.mask(r.share(r.advertise()), silent=[0, 1, 2, 3])


def test_forged_share_is_detected_when_extra_shares_exist() -> None:
    # a client lying about a share cannot shift the sum: the surplus share disagrees
    r = make_round(range(8), 20, 16, np.random.default_rng(7))
    requests = r.mask(r.share(r.advertise()))
    honest = r.clients[0].unmask(requests[0])
    forged = dict(honest.self_mask_shares)
    forged[1] = bytes(33)
    r.server.receive(0, type(honest)(honest.round, 0, forged, honest.key_shares))
    r.unmask({u: q for u, q in requests.items() if u != 0})
    with pytest.raises(SecAggAborted, match="inconsistent"):
        r.server.finish()


def test_forged_share_is_detected_even_with_exactly_threshold_shares() -> None:
    # complete graph of 6: k = 5, t = 3; two silent clients leave exactly 3 shares each
    r = make_round(range(6), 20, 16, np.random.default_rng(8))
    requests = r.mask(r.share(r.advertise()))
    honest = r.clients[0].unmask(requests[0])
    forged = dict(honest.self_mask_shares)
    forged[1] = bytes(33)
    r.server.receive(0, type(honest)(honest.round, 0, forged, honest.key_shares))
    r.unmask({u: q for u, q in requests.items() if u not in (0, 4, 5)})
    with pytest.raises(SecAggAborted, match="self-mask seed of client 1 does not match its hash"):
        r.server.finish()


def test_bad_round_parameters_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="threshold=9 must be in 1..neighbors"):
        SecAggServer(1, list(range(6)), 10, 16, neighbors=4, threshold=9)
    with pytest.raises(ConfigError, match="distinct"):
        SecAggServer(1, [1, 1, 2], 10, 16)
    with pytest.raises(ConfigError, match="secure.bits=65"):
        SecAggServer(1, [1, 2, 3], 10, 65)


def test_float_updates_come_back_as_the_weighted_mean_of_the_survivors() -> None:
    rng = np.random.default_rng(9)
    n, params = 10, 33
    config = EncodingConfig(clip=0.5, quant_bits=10, max_weight=20)
    bits = modulus_bits(config.quant_bits, n, config.max_weight)
    updates = {u: rng.uniform(-0.5, 0.5, params) for u in range(n)}
    weights = {u: int(rng.integers(1, 21)) for u in range(n)}
    inputs = {u: encode_input(updates[u], weights[u], config, bits, rng) for u in range(n)}
    server = SecAggServer(2, list(range(n)), params + 1, bits)
    result, _ = run_round(server, inputs, Dropouts(before_masked=frozenset({4})))
    mean, weight_sum = decode_aggregate(result.total, config, bits)
    alive = [u for u in range(n) if u != 4]
    assert weight_sum == sum(weights[u] for u in alive)
    expected = sum(weights[u] * updates[u] for u in alive) / weight_sum
    assert np.max(np.abs(mean - expected)) < config.clip / levels(config.quant_bits)
