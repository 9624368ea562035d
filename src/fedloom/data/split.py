"""Held-out test splits for datasets that ship without one."""

from __future__ import annotations

import numpy as np

from fedloom.core.errors import DataError


def stratified_holdout(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train, test)`` index arrays, with ``fraction`` of every class in ``test``.

    Per class, ``round(fraction * class_size)`` samples go to test, so the test split has
    the class balance of the whole set instead of a random tilt.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"the held-out fraction must lie in (0, 1), got {fraction}")
    test_parts = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(np.floor(fraction * len(members) + 0.5))
        test_parts.append(members[:n_test])
    test = np.sort(np.concatenate(test_parts)) if test_parts else np.empty(0, np.int64)
    in_test = np.zeros(len(labels), dtype=bool)
    in_test[test] = True
    train = np.flatnonzero(~in_test)
    if len(train) == 0 or len(test) == 0:
        raise DataError(
            f"holding out {fraction} of {len(labels)} samples leaves an empty "
            f"{'train' if len(train) == 0 else 'test'} split; change test_fraction"
        )
    return train.astype(np.int64), test.astype(np.int64)
