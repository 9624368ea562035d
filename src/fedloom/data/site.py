"""Site-local data: the files one client (a hospital, a bank) holds, described by a small
YAML file, so ``fedloom client --data site.yaml`` reads only its own data.

``site.yaml`` (paths relative to the file's folder)::

    format: npz            # npz | csv | idx | images | dataset
    path: site_a.npz       # the file (npz, csv) or folder (images)
    num_classes: 10        # the federation's classes (a site may lack some); default:
                           # the largest label + 1
    # npz:     x_key: x, y_key: y
    # csv:     label_column: -1 (index or header name), header: true, shape: [1, 8, 8],
    #          scale: 1.0 (features are divided by it)
    # idx:     images: train-images-idx3-ubyte.gz, labels: train-labels-idx1-ubyte.gz
    # images:  one sub-folder per class (its name, sorted, is the label unless
    #          ``classes`` lists them in label order); size: [28, 28], grayscale: true
    # dataset: name: <registered dataset>, options: {<data.* keys>}; its train split

Every problem is a ``DataError`` or ``ConfigError`` naming the file and the key.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedloom.config import parse_yaml
from fedloom.core.errors import ConfigError, DataError
from fedloom.core.registry import REGISTRY
from fedloom.data.base import TensorData
from fedloom.data.config import DataConfig
from fedloom.data.idx import read_idx_pair
from fedloom.data.registry import LoadedData


class SiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    format: Literal["npz", "csv", "idx", "images", "dataset"]
    path: str | None = None
    num_classes: int | None = Field(None, ge=1)
    x_key: str = "x"
    y_key: str = "y"
    label_column: int | str = -1
    header: bool = True
    shape: list[int] | None = None
    scale: float = Field(1.0, gt=0)
    images: str | None = None
    labels: str | None = None
    size: list[int] | None = None
    grayscale: bool = True
    classes: list[str] | None = None
    name: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


def load_site(path: str | Path) -> tuple[TensorData, int]:
    """A site's data and the federation's number of classes, from its ``site.yaml``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"--data: {path} does not exist"])
    raw = parse_yaml(path.read_text(), str(path)) or {}
    try:
        site = SiteConfig.model_validate(raw)
    except ValidationError as error:
        problems = [
            f"{path}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        ]
        raise ConfigError(problems) from None
    known: int | None = site.num_classes
    if site.format == "dataset":
        loaded = _registered(site, path.parent)
        data, known = loaded.train, known or loaded.num_classes
    else:
        data = READERS[site.format](site, path.parent)
    if len(data) == 0:
        raise DataError(f"{path}: the site has no examples")
    classes = known
    if classes is None:
        if data.has_labels:  # a site may lack classes: its labels cannot say how many
            raise ConfigError([f"{path}: num_classes is required (the federation's classes)"])
        classes = int(data.y[0].numel())
    if data.has_labels and int(data.y.max()) >= classes:
        raise DataError(f"{path}: label {int(data.y.max())} is not below num_classes={classes}")
    return data, classes


def _file(site: SiteConfig, base: Path, value: str | None, key: str) -> Path:
    if value is None:
        raise ConfigError([f"site format {site.format} needs {key}"])
    found = (base / value).expanduser()
    if not found.exists():
        raise DataError(f"{key}: {found} does not exist")
    return found


def _targets(y: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(y))
    return t.to(torch.float32) if t.dtype.is_floating_point else t.to(torch.int64)


def _npz(site: SiteConfig, base: Path) -> TensorData:
    path = _file(site, base, site.path, "path")
    with np.load(path, allow_pickle=False) as archive:
        for key in (site.x_key, site.y_key):
            if key not in archive:
                raise DataError(f"{path} has no array {key!r}; it has {sorted(archive)}")
        x, y = archive[site.x_key], archive[site.y_key]
    return TensorData(torch.from_numpy(x.astype(np.float32)) / site.scale, _targets(y))


def _csv(site: SiteConfig, base: Path) -> TensorData:
    path = _file(site, base, site.path, "path")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    names = rows.pop(0) if site.header and rows else []
    if not rows:
        raise DataError(f"{path} has no data rows")
    column = site.label_column
    if isinstance(column, str):
        if column not in names:
            raise DataError(f"{path}: label_column {column!r} is not a header: {names}")
        column = names.index(column)
    try:
        table = np.array(rows, dtype=np.float64)
    except ValueError as error:
        raise DataError(f"{path}: not a table of numbers ({error})") from None
    y = table[:, column]
    x = np.delete(table, column % table.shape[1], axis=1).astype(np.float32) / site.scale
    labels = y.astype(np.int64) if np.all(y == np.round(y)) else y.astype(np.float32)
    features = torch.from_numpy(x)
    if site.shape is not None:
        features = features.reshape(len(x), *site.shape)
    return TensorData(features, _targets(labels))


def _idx(site: SiteConfig, base: Path) -> TensorData:
    return read_idx_pair(
        _file(site, base, site.images, "images"), _file(site, base, site.labels, "labels")
    )


def _images(site: SiteConfig, base: Path) -> TensorData:
    from PIL import Image

    root = _file(site, base, site.path, "path")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    classes = site.classes or folders
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise DataError(f"{root}: folders {unknown} are not in classes {classes}")
    xs, ys = [], []
    for label, name in enumerate(classes):
        for file in sorted((root / name).glob("*")) if (root / name).is_dir() else []:
            with Image.open(file) as opened:
                image = opened.convert("L" if site.grayscale else "RGB")
            if site.size is not None:
                image = image.resize((site.size[1], site.size[0]))
            pixels = np.asarray(image, dtype=np.float32) / 255.0
            xs.append(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))
            ys.append(label)
    if not xs:
        raise DataError(f"{root}: no images in {classes}")
    shapes = {x.shape for x in xs}
    if len(shapes) != 1:
        raise DataError(f"{root}: images differ in size {sorted(shapes)}; set size: [H, W]")
    return TensorData(torch.from_numpy(np.stack(xs)), torch.tensor(ys, dtype=torch.int64))


def _registered(site: SiteConfig, base: Path) -> LoadedData:
    if site.name is None:
        raise ConfigError(["site format dataset needs name (a registered dataset)"])
    loader = REGISTRY.component("dataset", site.name, "name").load()
    options = {"dir": str(base / site.path) if site.path else None, **site.options}
    return loader(DataConfig(name=site.name, **options), 1, 0)  # type: ignore[no-any-return]


READERS = {"npz": _npz, "csv": _csv, "idx": _idx, "images": _images}
