"""PNG plots of a run and of its data partition (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

MARGINS = {"left": 0.13, "right": 0.97, "bottom": 0.13, "top": 0.91}
"""Fixed margins of a 6 x 4 in plot: ``tight_layout`` measures every label first, which
took a third of a plot's time (a run draws four)."""
PNG = {"compress_level": 1}
"""zlib level 1 instead of 6: a third of the encoding time, a fifth larger files."""


def _series(metrics: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(m["round"], m[key]) for m in metrics if m.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def plot_metrics(
    metrics: Sequence[dict[str, Any]],
    directory: Path,
    main: str = "test_accuracy",
    title: str = "",
) -> list[Path]:
    """The task's main metric (``accuracy.png`` for classification, ``mse.png``, ...) and
    ``loss.png`` against round, the main metric against cumulative bytes on the wire
    (``bytes.png``), each titled with the run's key config."""
    written = [_against_bytes(metrics, directory, main, title)]
    name = main.removeprefix("test_")
    panels = [(name, [main])] if name != "loss" else []
    for name, keys in (*panels, ("loss", ["test_loss", "train_loss"])):
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in keys:
            ax.plot(*_series(metrics, key), marker=".", label=key)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title(title, fontsize=8)
        fig.subplots_adjust(**MARGINS)
        path = directory / f"{name}.png"
        fig.savefig(path, dpi=100, pil_kwargs=PNG)
        plt.close(fig)
        written.append(path)
    return written


def _against_bytes(
    metrics: Sequence[dict[str, Any]], directory: Path, main: str, title: str
) -> Path:
    total, points = 0, []
    for m in metrics:
        total += m.get("bytes_up", 0) + m.get("bytes_down", 0)
        if m.get(main) is not None:
            points.append((total / 1e6, m[main]))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=main)
    ax.set_xlabel("cumulative bytes on the wire (MB, up + down)")
    ax.set_ylabel(main.removeprefix("test_"))
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=8)
    fig.subplots_adjust(**MARGINS)
    path = directory / "bytes.png"
    fig.savefig(path, dpi=100, pil_kwargs=PNG)
    plt.close(fig)
    return path


def write_partition_table(histogram: np.ndarray, path: Path) -> None:
    """CSV: one row per client, one column per class, plus the client's total."""
    classes = histogram.shape[1]
    header = "client," + ",".join(f"class_{c}" for c in range(classes)) + ",total\n"
    rows = [
        f"{k}," + ",".join(str(int(v)) for v in row) + f",{int(row.sum())}\n"
        for k, row in enumerate(histogram)
    ]
    path.write_text(header + "".join(rows))


def plot_partition(histogram: np.ndarray, path: Path) -> None:
    """Heatmap of label counts: one row per class, one column per client.

    A heatmap stays readable (and fast to draw) for hundreds of clients, where stacked
    bars turn into thousands of patches.
    """
    clients, classes = histogram.shape
    width, height = min(max(6.0, clients * 0.08), 16), 1.5 + classes * 0.3
    fig, ax = plt.subplots(figsize=(width, height))
    image = ax.imshow(histogram.T, aspect="auto", interpolation="nearest", cmap="viridis")
    fig.colorbar(image, ax=ax, label="samples", fraction=0.05, pad=0.01)
    ax.set_xlabel("client")
    ax.set_ylabel("class")
    ax.set_title(f"label histogram of {clients} clients")
    # fixed margins in inches (tight_layout measures every label: most of the plot's time)
    fig.subplots_adjust(
        left=0.7 / width, right=1 - 0.75 / width, bottom=0.6 / height, top=1 - 0.4 / height
    )
    fig.savefig(path, dpi=100, pil_kwargs=PNG)
    plt.close(fig)
