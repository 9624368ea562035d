"""The fine-tuning feature: freeze all but the selected parameters, and export the result.

Only the selected tensors (and the model's floating-point buffers, such as BatchNorm
statistics, which change in training whatever is frozen) are in the server's global
state, so only they are sent down, trained, clipped, noised, compressed and sent up; the
frozen rest stays as pretrained (``requires_grad`` is off, so no optimizer step, momentum
or weight decay ever touches it). The run's ``model.safetensors`` is the
whole model, with LoRA adapters merged into their layers.
"""

from __future__ import annotations

from torch import nn

from fedloom.core.tensors import Tensors, state_of
from fedloom.finetune.lora import merge_lora
from fedloom.finetune.select import SELECTORS
from fedloom.parts import Parts


def export_full(model: nn.Module) -> Tensors:
    return {n: t.contiguous() for n, t in state_of(model).items()}


def export_merged(model: nn.Module) -> Tensors:
    return export_full(merge_lora(model))


def finetune_feature(parts: Parts) -> None:
    cfg = parts.config.finetune
    if cfg.mode == "full":
        return  # the default parts already train, send and aggregate everything
    trainable = frozenset(SELECTORS[cfg.mode](parts))
    for name, param in parts.model.named_parameters():
        param.requires_grad_(name in trainable)
    # floating-point buffers (BatchNorm statistics) still move while the clients train;
    # they travel and are averaged like the trained part, so no client inherits another's
    buffers = {n for n, b in parts.model.named_buffers() if b.is_floating_point()}
    parts.trainable = (trainable | buffers).__contains__
    merge = cfg.mode == "lora" and cfg.lora_merge
    parts.export = export_merged if merge else export_full
    parts.finish = merge_lora if merge else None
    sizes = {n: p.numel() for n, p in parts.model.named_parameters()}
    parts.notes["trainable_parameters"] = sum(sizes[n] for n in trainable)
    parts.notes["trainable_tensors"] = sorted(trainable)
