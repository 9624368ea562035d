"""``fedloom report RUN_DIR``: one self-contained HTML page (plots embedded as data URIs)
with the config, the summary, the plots and the partition."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from fedloom.report.runs import Run

PLOTS = (
    "accuracy.png",
    "mse.png",
    "perplexity.png",
    "loss.png",
    "bytes.png",
    "epsilon.png",
    "accuracy_vs_epsilon.png",
    "partition.png",
)


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(path.name)}</figcaption></figure>"
    )


def render(run: Run) -> str:
    """The page. The partition plot is there only if the run wrote one (a DP run that
    withholds client information does not)."""
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v))}</td></tr>"
        for k, v in run.summary.items()
    )
    images = "".join(_image(run.path / name) for name in PLOTS if (run.path / name).is_file())
    config = html.escape(json.dumps(run.config, indent=2))
    title = html.escape(f"fedloom run {run.path.name}")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>body{{font-family:sans-serif;max-width:1100px;"
        "margin:auto}img{max-width:100%}table{border-collapse:collapse}th,td{border:1px "
        "solid #ccc;padding:2px 6px;text-align:left}</style></head><body>"
        f"<h1>{title}</h1><h2>Summary</h2><table>{rows}</table>"
        f"<h2>Plots</h2>{images}<h2>Config</h2><pre>{config}</pre></body></html>\n"
    )


def write_report(run: Run, out: Path | None = None) -> Path:
    path = out or run.path / "report.html"
    path.write_text(render(run))
    return path
