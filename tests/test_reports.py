"""``fedloom compare`` and ``fedloom report``: files a user can open, checked by parsing."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

from typer.testing import CliRunner

from fedloom.cli import app

BASE = ["model.name=logreg", "clients.num=4", "rounds=2"]


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[bytes] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        src = dict(attrs).get("src")
        if tag == "img" and src:
            assert src.startswith("data:image/png;base64,")
            self.images.append(base64.b64decode(src.split(",", 1)[1], validate=True))


def test_compare_and_report(tmp_path: Path) -> None:
    runner = CliRunner()
    a, b = tmp_path / "lr0.05", tmp_path / "lr0.2"
    assert runner.invoke(app, ["run", *BASE, f"output_dir={a}"]).exit_code == 0
    assert runner.invoke(app, ["run", *BASE, "train.lr=0.2", f"output_dir={b}"]).exit_code == 0
    out = tmp_path / "cmp"
    assert runner.invoke(app, ["compare", str(a), str(b), "--out", str(out)]).exit_code == 0
    text = (out / "compare.md").read_text()
    assert (
        "**train.lr**" in text and "**0.2**" in text and "Config keys that differ: train.lr" in text
    )
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert runner.invoke(app, ["report", str(a)]).exit_code == 0
    page = _Page()
    page.feed((a / "report.html").read_text())
    assert {"html", "table", "pre", "img"} <= set(page.tags)
    assert len(page.images) >= 4  # accuracy, loss, bytes, partition
    assert all(image[:8] == b"\x89PNG\r\n\x1a\n" for image in page.images)
    bad = runner.invoke(app, ["report", str(tmp_path)])
    assert bad.exit_code == 2 and "not a finished run" in " ".join(bad.output.split())


def test_tensorboard_logger_writes_every_rounds_scalars(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from fedloom.config import load_config
    from fedloom.experiment import Experiment

    cfg = load_config(None, [*BASE, "loggers=[tensorboard, csv]", f"output_dir={tmp_path}"])
    result = Experiment(cfg).run()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    accuracy = [(e.step, e.value) for e in events.Scalars("test_accuracy")]
    expected = [(m["round"], m["test_accuracy"]) for m in result.metrics]
    assert [s for s, _ in accuracy] == [1, 2]
    assert all(abs(v - w) < 1e-6 for (_, v), (_, w) in zip(accuracy, expected, strict=True))
    assert {"bytes_up", "num_clients", "wall_s"} <= set(events.Tags()["scalars"])
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 3
