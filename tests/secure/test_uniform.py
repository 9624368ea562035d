"""The server's view of one client's masked vector is uniform, whatever the input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fedloom.secure.encoding import unpack

from .conftest import make_round

BITS, LENGTH = 16, 2**18
P_FLOOR = 1e-7  # three tests per vector, two vectors: false failure rate < 1e-6


def _masked_view(inputs: dict[int, np.ndarray]) -> np.ndarray:
    r = make_round(range(3), LENGTH, BITS, np.random.default_rng(0))
    r.inputs = inputs
    r.mask(r.share(r.advertise()))
    return unpack(r.sent["mask"][0].vector, LENGTH, BITS)  # type: ignore[attr-defined]


def _uniformity_p_values(values: np.ndarray) -> list[float]:
    high = np.bincount((values >> np.uint64(8)).astype(np.int64), minlength=256)
    low = np.bincount((values & np.uint64(255)).astype(np.int64), minlength=256)
    ks = stats.kstest((values.astype(np.float64) + 0.5) / 2**BITS, "uniform")
    return [stats.chisquare(high).pvalue, stats.chisquare(low).pvalue, ks.pvalue]


@pytest.mark.parametrize("pattern", ["constant", "ramp"])
def test_masked_vector_is_uniform(pattern: str) -> None:
    # the test's own data: a constant or a slow ramp, as far from uniform as it gets
    x = (
        np.full(LENGTH, 12345, dtype=np.uint64)
        if pattern == "constant"
        else (np.arange(LENGTH, dtype=np.uint64) // 64) % np.uint64(2**BITS)
    )
    inputs = {u: x.copy() for u in range(3)}
    assert min(_uniformity_p_values(x)) < 1e-100  # the tests do see a non-uniform input
    p_values = _uniformity_p_values(_masked_view(inputs))
    assert min(p_values) > P_FLOOR, p_values
