"""Site-local data files (``site.yaml``): every format reads the same examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedloom.core.errors import ConfigError, DataError
from fedloom.data.site import load_site
from tests.sites import LABELS, PIXELS, write_site


@pytest.mark.parametrize("fmt", ["npz", "csv", "idx", "images"])
def test_each_format_reads_the_same_examples(tmp_path: Path, fmt: str) -> None:
    data, classes = load_site(write_site(tmp_path, fmt))
    assert classes == 10 and data.x.shape == (30, 1, 8, 8) and data.x.dtype == torch.float32
    if fmt == "images":  # read back in label order, file order within a label
        order = np.lexsort((np.arange(30), LABELS))
        expected_x, expected_y = PIXELS[order], LABELS[order]
    else:
        expected_x, expected_y = PIXELS, LABELS
    assert data.y.tolist() == expected_y.tolist()
    assert np.allclose(data.x[:, 0].numpy(), expected_x / 255.0, atol=1e-6)


def test_a_registered_dataset_as_a_site(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text("format: dataset\nname: digits\n")
    data, classes = load_site(tmp_path / "site.yaml")
    assert classes == 10 and data.x.shape[1:] == (1, 8, 8) and len(data) > 1000


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ("format: npz\npath: none.npz\n", DataError, "does not exist"),
        ("format: parquet\npath: a\n", ConfigError, "format"),
        ("format: npz\npath: a.npz\nx_key: pixels\n", DataError, "no array 'pixels'"),
        ("format: npz\npath: a.npz\nnum_classes: 5\n", DataError, "not below num_classes=5"),
        ("format: idx\nimages: img.gz\n", ConfigError, "needs labels"),
        ("format: npz\npath: a.npz\ncolour: red\n", ConfigError, "colour"),
    ],
)
def test_bad_site_files_name_the_problem(
    tmp_path: Path, spec: str, error: type[Exception], message: str
) -> None:
    write_site(tmp_path, "npz")
    (tmp_path / "img.gz").write_bytes(b"")
    (tmp_path / "site.yaml").write_text(spec)
    with pytest.raises(error, match=message):
        load_site(tmp_path / "site.yaml")


def test_a_labelled_site_must_say_how_many_classes(tmp_path: Path) -> None:
    write_site(tmp_path, "npz")
    (tmp_path / "site.yaml").write_text("format: npz\npath: a.npz\n")
    with pytest.raises(ConfigError, match="num_classes is required"):
        load_site(tmp_path / "site.yaml")
    (tmp_path / "site.yaml").write_text("format: npz\npath: [a.npz\n")
    with pytest.raises(ConfigError, match=r"site.yaml:\d+: YAML syntax error"):
        load_site(tmp_path / "site.yaml")
