"""``fedloom export | predict``: a run's model as a verified on-device file, and a first
prediction with it.

Registered on the main typer app by ``register``; torch, onnx and onnxruntime are
imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from fedloom.core.errors import FedloomError
from fedloom.terminal import console, fail


def export(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    format: Annotated[
        Literal["onnx", "executorch", "torchscript"],
        typer.Option("--format", help="onnx, torchscript, or executorch (needs the edge extra)."),
    ] = "onnx",
    quantize: Annotated[
        Literal["int8"] | None,
        typer.Option("--quantize", help="int8: static quantization calibrated on train data."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="The file (default: RUN_DIR/export/model[.int8].onnx or .pte)."),
    ] = None,
    min_agreement: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Top-1 agreement with PyTorch it needs.")
    ] = 0.99,
    latency_runs: Annotated[
        int, typer.Option(min=1, help="Batch-1 calls timed for the median latency.")
    ] = 100,
) -> None:
    """Export a run's model, verified in its runtime on the run's test split."""
    from fedloom.export.run import export_run
    from fedloom.report.progress import phase

    try:
        with phase(f"export ({format})"):
            report = export_run(
                run_dir,
                format=format,
                quantize=quantize,
                out=out,
                min_agreement=min_agreement,
                latency_runs=latency_runs,
            )
    except FedloomError as error:
        raise fail(error) from None
    check = report.verification
    accuracy = check.accuracy_exported
    console.print(
        f"wrote {report.path} ({report.size_bytes:,} bytes, "
        f"{report.size_bytes / report.float_size_bytes:.2f}x float; {report.exporter} exporter)\n"
        f"verified on {check.num_examples} test examples: top-1 agreement "
        f"{check.top1_agreement:.2%}, largest logit difference {check.max_abs_logit_diff:.2g}"
        f"{'' if accuracy is None else f', accuracy {accuracy:.4f}'}; "
        f"latency {report.latency_ms_batch1:.3f} ms at batch 1\n"
        f"report: {report.path.parent / 'export.json'}",
        soft_wrap=True,
    )


def predict(
    model_file: Annotated[Path, typer.Argument(help="An exported .onnx or .pte file.")],
    inputs: Annotated[
        Path, typer.Argument(help="A folder of images, an .npz (array x) or an IDX images file.")
    ],
    csv: Annotated[
        Path | None, typer.Option("--csv", help="Write the predictions here instead.")
    ] = None,
    scale: Annotated[
        float | None,
        typer.Option(help="Divide npz inputs by this (default: the stored scale for raw values)."),
    ] = None,
) -> None:
    """Predict with an exported model: index,prediction,label_name per input."""
    from fedloom.export.predict import as_csv
    from fedloom.export.predict import predict as run_predict

    try:
        found = run_predict(model_file, inputs, scale)
    except FedloomError as error:
        raise fail(error) from None
    if csv is None:
        typer.echo(as_csv(found, header=False), nl=False)
        return
    csv.write_text(as_csv(found, header=True))
    console.print(f"wrote {len(found)} predictions to {csv}")


def register(app: typer.Typer) -> None:
    """Add ``export`` and ``predict`` to ``app``."""
    app.command()(export)
    app.command()(predict)
