"""Site files for tests: the first 30 digits written as npz, csv, IDX or image folders."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

X, Y = load_digits(return_X_y=True)
PIXELS = (X[:30] * 255 / 16).round().astype(np.uint8).reshape(30, 8, 8)
LABELS = Y[:30].astype(np.uint8)


def write_site(base: Path, fmt: str) -> Path:
    """A site holding the first 30 digits in format ``fmt``; returns its site.yaml."""
    spec: str
    if fmt == "npz":
        np.savez(base / "a.npz", x=PIXELS[:, None] / 255.0, y=LABELS.astype(np.int64))
        spec = "format: npz\npath: a.npz\nnum_classes: 10\n"
    elif fmt == "csv":
        flat = PIXELS.reshape(30, 64) / 255.0
        rows = [
            ",".join([*(f"{v:.8f}" for v in r), str(lab)])
            for r, lab in zip(flat, LABELS, strict=True)
        ]
        header = ",".join([*(f"p{i}" for i in range(64)), "digit"])
        (base / "b.csv").write_text("\n".join([header, *rows]) + "\n")
        spec = "format: csv\npath: b.csv\nlabel_column: digit\nshape: [1, 8, 8]\nnum_classes: 10\n"
    elif fmt == "idx":
        images = struct.pack(">IIII", 0x803, 30, 8, 8) + PIXELS.tobytes()
        (base / "img.gz").write_bytes(gzip.compress(images))
        (base / "lab").write_bytes(struct.pack(">II", 0x801, 30) + LABELS.tobytes())
        spec = "format: idx\nimages: img.gz\nlabels: lab\nnum_classes: 10\n"
    else:
        for i, (img, lab) in enumerate(zip(PIXELS, LABELS, strict=True)):
            folder = base / "imgs" / str(lab)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i:03d}.png")
        classes = [str(c) for c in range(10)]
        spec = f"format: images\npath: imgs\nclasses: {classes}\nnum_classes: 10\n"
    (base / "site.yaml").write_text(spec)
    return base / "site.yaml"
