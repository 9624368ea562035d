"""``fedloom compare RUN_DIR...``: one figure and one markdown table for several runs,
with the config keys that differ between them called out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fedloom.report.runs import Run, differences, flatten  # noqa: E402


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(runs: list[Run]) -> str:
    """Markdown: a row per run (final and best main metric, bytes, ε, wall time), then
    the differing config keys as bold columns."""
    diff = differences(runs)
    header = ["run", "main metric", "final", "best", "bytes up", "bytes down", "ε", "wall s"]
    header += [f"**{k}**" for k in diff]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for run in runs:
        s, flat, main = run.summary, flatten(run.config), run.main
        values = [m[main] for m in run.metrics if m.get(main) is not None]
        lower = main in ("test_mse", "test_perplexity")
        best = (min if lower else max)(values, default=None)
        privacy = s.get("privacy")
        eps = privacy.get("epsilon") if isinstance(privacy, dict) else None
        row = [
            run.path.name,
            main,
            _cell(s.get(f"final_{main}")),
            _cell(best),
            _cell(s.get("total_bytes_up")),
            _cell(s.get("total_bytes_down")),
            _cell(eps),
            _cell(s.get("rounds_wall_s")),
        ] + [f"**{_cell(flat.get(k))}**" for k in diff]
        lines.append("| " + " | ".join(row) + " |")
    note = f"\nConfig keys that differ: {', '.join(diff) or 'none'}.\n"
    return "\n".join(lines) + "\n" + note


def figure(runs: list[Run], path: Path) -> Path:
    """The main metric against round and against cumulative bytes, a line per run."""
    fig, (by_round, by_bytes) = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        main, total, rounds, xs, ys = run.main, 0, [], [], []
        for m in run.metrics:
            total += m.get("bytes_up", 0) + m.get("bytes_down", 0)
            if m.get(main) is not None:
                rounds.append(m["round"])
                xs.append(total / 1e6)
                ys.append(m[main])
        by_round.plot(rounds, ys, marker=".", label=run.path.name)
        by_bytes.plot(xs, ys, marker=".", label=run.path.name)
    by_round.set_xlabel("round")
    by_bytes.set_xlabel("cumulative bytes (MB, up + down)")
    for ax in (by_round, by_bytes):
        ax.set_ylabel(runs[0].main.removeprefix("test_"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def compare(runs: list[Run], out: Path) -> tuple[Path, Path]:
    """Write ``compare.png`` and ``compare.md`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    image = figure(runs, out / "compare.png")
    text = out / "compare.md"
    text.write_text(f"# Runs compared\n\n![runs](compare.png)\n\n{table(runs)}")
    return image, text
