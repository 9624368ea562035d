"""DataConfig defaults and the combinations it refuses."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fedloom.data.config import DataConfig


def test_defaults() -> None:
    cfg = DataConfig()
    assert (cfg.name, cfg.partition, cfg.resolved_partition) == ("digits", None, "iid")
    assert (cfg.alpha, cfg.shards_per_client, cfg.test_fraction, cfg.min_client_size) == (
        0.5,
        2,
        0.2,
        2,
    )


def test_synthetic_defaults_to_natural() -> None:
    assert DataConfig(name="synthetic").resolved_partition == "natural"
    assert DataConfig(name="mnist", partition="shards").resolved_partition == "shards"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "digits", "partition": "natural"}, "natural"),
        ({"name": "synthetic", "partition": "iid"}, "own per-device split"),
        ({"name": "digits", "files": "test"}, "files"),
        ({"alpha": 0.0}, "alpha"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"shards_per_client": 0}, "shards_per_client"),
        ({"partition": "random"}, "dirichlet"),
        ({"aplha": 0.1}, "aplha"),
    ],
)
def test_rejects_invalid(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DataConfig(**fields)


def test_is_frozen() -> None:
    cfg = DataConfig()
    with pytest.raises(ValidationError):
        cfg.alpha = 2.0  # type: ignore[misc]
