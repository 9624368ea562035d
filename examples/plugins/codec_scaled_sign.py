"""A codec plugin: scaled signs (Bernstein et al. 2018; with error feedback as in
Karimireddy et al. 2019). Each tensor goes as its signs (int8) and its mean absolute
value: a quarter of float32's bytes. ``lossy``, so fedloom adds error feedback.

    fedloom run --import examples/plugins/codec_scaled_sign.py compression.up=scaled_sign
"""

from __future__ import annotations

import torch
from safetensors.torch import load, save

import fedloom
from fedloom.core.codec import CodecContext, Key
from fedloom.core.message import Payload
from fedloom.core.tensors import Tensors


class ScaledSign:
    name = "scaled_sign"

    def encode(self, tensors: Tensors, key: Key = ()) -> bytes:
        signs = {f"sign/{n}": torch.sign(t.detach()).to(torch.int8) for n, t in tensors.items()}
        scales = {f"scale/{n}": t.detach().abs().mean().reshape(1) for n, t in tensors.items()}
        return save({n: t.contiguous() for n, t in {**signs, **scales}.items()})

    def decode(self, data: Payload) -> Tensors:
        blob = load(bytes(data))
        names = [n.removeprefix("sign/") for n in blob if n.startswith("sign/")]
        return {n: blob[f"sign/{n}"].float() * blob[f"scale/{n}"] for n in names}


@fedloom.register("codec", "scaled_sign", capabilities={"lossy"})
def scaled_sign(arg: str | None, ctx: CodecContext) -> ScaledSign:
    if arg is not None:
        raise ValueError(f"scaled_sign takes no argument, got 'scaled_sign:{arg}'")
    return ScaledSign()
