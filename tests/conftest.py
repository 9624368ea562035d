"""Every test starts from the same random state and the same torch thread count, whatever
ran before it or how often.

Hypothesis draws its examples from a fixed seed too (``HYPOTHESIS_PROFILE=explore``
searches with fresh ones), so a run of the suite is a function of the code alone.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

# no wall-clock checks either: a slow machine must not fail an example that passes
settings.register_profile(
    "deterministic",
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


THREADS = torch.get_num_threads()
"""torch's default here: what a fresh ``fedloom`` process uses, so an in-process run and a
subprocess run compute alike (bit-identical comparisons depend on it)."""


@pytest.fixture(autouse=True)
def _seeded() -> Iterator[None]:
    """Seed the global generators that tests (not fedloom, which injects its own) draw from,
    and undo a run's ``compute.threads``, which sets torch's process-wide thread count."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(THREADS)
