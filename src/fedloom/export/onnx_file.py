"""PyTorch model -> one self-contained ONNX file, and the metadata written into it.

The dynamo exporter (``torch.onnx.export(..., dynamo=True)``, which needs onnxscript) is
tried first; a model it cannot trace falls back to the TorchScript-based exporter, and
the one used is reported. The batch dimension stays dynamic.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from fedloom.core.errors import FedloomError

Exporter = Literal["dynamo", "torchscript"]
OPSET = 18
log = logging.getLogger(__name__)


def _dynamo(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():  # torch's own exporter internals, not the user's model
        warnings.filterwarnings("ignore", message=".*treespec", category=FutureWarning)
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            dynamic_shapes=({0: batch},),
            opset_version=OPSET,
            external_data=False,
            verbose=False,
        )
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise FedloomError("torch.onnx.export returned no program")
    program.save(str(path), external_data=False)


def _torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
        )


def write_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> Exporter:
    """Export ``model`` (in eval mode, on the CPU) for inputs like ``example`` to ``path``."""
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError:
        log.warning("onnxscript is not installed: using the TorchScript-based ONNX exporter")
        _torchscript(model, example, path)
        return "torchscript"
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping ..."
    try:
        _dynamo(model, example, path)
        return "dynamo"
    except Exception as error:  # any tracing failure: the older exporter may still work
        log.warning("dynamo ONNX export failed (%s); using the TorchScript-based exporter", error)
        _torchscript(model, example, path)
        return "torchscript"
    finally:
        registration.setLevel(level)


def set_metadata(path: Path, props: dict[str, str]) -> None:
    """Write ``props`` into ``path``'s ``metadata_props`` (replacing keys it already has),
    drop what only debugging needs, check the model and save it as one file."""
    import onnx

    proto = onnx.load(str(path))
    for node in proto.graph.node:  # the exporter's stack traces and module paths: ~10%
        del node.metadata_props[:]  # of a small model's file
        node.doc_string = ""
    del proto.graph.value_info[:]  # inferred shapes: onnxruntime infers them again
    kept = {p.key: p.value for p in proto.metadata_props if p.key not in props}
    del proto.metadata_props[:]
    for key, value in {**kept, **props}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path), save_as_external_data=False)


def weight_figures(path: Path) -> dict[str, float | int]:
    """Zeros among the weights and the gzip'd file size: ONNX runtimes have no sparse
    initializers in common use, so a pruned model's saving shows up compressed."""
    import gzip

    import numpy as np
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    total = zeros = 0
    for init in proto.graph.initializer:
        if init.name.endswith(("_scale", "_zero_point")):  # int8 quantization parameters
            continue
        values = numpy_helper.to_array(init)
        if values.dtype.kind in "fiu" and values.dtype != np.int64 and values.size > 1:
            total += values.size
            zeros += int(np.count_nonzero(values == 0))
    raw = path.read_bytes()
    return {
        "weights": total,
        "zeros_fraction": zeros / total if total else 0.0,
        "gzip_bytes": len(gzip.compress(raw, compresslevel=9, mtime=0)),
    }
