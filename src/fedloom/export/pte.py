"""ExecuTorch: ``torch.export`` -> ``to_edge_transform_and_lower`` with the XNNPACK
partitioner -> one ``.pte`` file, int8 through PT2E with the XNNPACK quantizer, run back
in ExecuTorch's Python runtime. Optional: ``pip install 'fedloom[edge]'``.

The program has a fixed batch of one (how a device calls it); the preprocessing goes
into a JSON file beside the ``.pte``, which has no metadata field of its own.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedloom.core.errors import ConfigError, FedloomError

PAIRING = "executorch 1.5.1 with torch 2.13"


def require_executorch() -> None:
    """A ConfigError saying how to install ExecuTorch when it is missing."""
    try:
        import executorch  # noqa: F401
    except ImportError:
        raise ConfigError(
            [
                "--format executorch needs ExecuTorch: pip install 'fedloom[edge]' "
                f"(the tested pairing is {PAIRING})"
            ]
        ) from None


def sidecar(path: Path) -> Path:
    """The JSON file beside a ``.pte`` that holds its preprocessing."""
    return path.with_name(path.name + ".json")


def _quantized(model: nn.Module, example: torch.Tensor, calibration: torch.Tensor) -> nn.Module:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    captured = torch.export.export(model, (example,)).module()
    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True)
    )
    prepared = prepare_pt2e(captured, quantizer)  # type: ignore[arg-type]
    with torch.no_grad():
        for row in calibration:
            prepared(row[None])
    return convert_pt2e(prepared)  # type: ignore[no-any-return]


def write_pte(
    model: nn.Module, example: torch.Tensor, path: Path, calibration: torch.Tensor | None
) -> None:
    """``model`` for one input like ``example[:1]`` as an XNNPACK-lowered ``.pte``; int8
    (PT2E, per-channel symmetric weights) when ``calibration`` examples are given."""
    require_executorch()
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    one = example[:1]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        source = model if calibration is None else _quantized(model, one, calibration)
        program = torch.export.export(source, (one,))
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        path.write_bytes(lowered.to_executorch().buffer)


def pte_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """A function running the ``.pte`` at ``path`` on a batch, one example per call."""
    require_executorch()
    from executorch.runtime import Runtime

    try:
        method = Runtime.get().load_program(str(path)).load_method("forward")
    except Exception as error:  # the runtime raises RuntimeError or ValueError
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FedloomError(f"{path}: ExecuTorch cannot load the program ({first})") from None

    def run(x: np.ndarray) -> np.ndarray:
        rows = [method.execute([torch.from_numpy(x[i : i + 1])])[0] for i in range(len(x))]
        return torch.cat(rows).double().numpy() if rows else np.zeros((0, 0))

    return run
