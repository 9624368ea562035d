"""A small native LoRA (Hu et al. 2021) for Linear and Conv2d layers, and its merge.

Each adapted layer keeps its pretrained weight frozen and learns W + (alpha/r) * B @ A,
with A (r x fan-in) drawn from a seeded generator and B (out x r) starting at zero, so the
adapted model starts exactly at the pretrained one. For a convolution, A is an r-channel
convolution with the layer's own kernel, stride and padding, and B a 1x1 convolution;
their product is again a kernel of the layer's shape, which is what ``merge`` adds in.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fedloom.core.errors import ConfigError

LORA_MARK = "lora_"


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, gen: torch.Generator) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        bound = 1 / math.sqrt(base.in_features)
        a = (torch.rand(rank, base.in_features, generator=gen) * 2 - 1) * bound
        self.lora_a = nn.Parameter(a)
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))

    def delta(self) -> Tensor:
        return self.scale * self.lora_b @ self.lora_a

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + self.scale * F.linear(F.linear(x, self.lora_a), self.lora_b)

    def merged(self) -> nn.Linear:
        out = copy.deepcopy(self.base)
        with torch.no_grad():
            out.weight += self.delta()
        return out


class LoRAConv2d(nn.Module):
    def __init__(self, base: nn.Conv2d, rank: int, alpha: float, gen: torch.Generator) -> None:
        super().__init__()
        if base.groups != 1 or base.padding_mode != "zeros":
            raise ConfigError(
                [
                    "finetune.mode=lora: only convolutions with groups=1 and zero padding "
                    f"get adapters (got {base}); name it in finetune.names to train it fully"
                ]
            )
        self.base = base
        self.scale = alpha / rank
        fan_in = base.in_channels * math.prod(base.kernel_size)
        shape = (rank, base.in_channels, *base.kernel_size)
        self.lora_a = nn.Parameter((torch.rand(shape, generator=gen) * 2 - 1) / math.sqrt(fan_in))
        self.lora_b = nn.Parameter(torch.zeros(base.out_channels, rank, 1, 1))

    def delta(self) -> Tensor:
        b = self.lora_b.flatten(1)
        return self.scale * (b @ self.lora_a.flatten(1)).view_as(self.base.weight)

    def forward(self, x: Tensor) -> Tensor:
        c = self.base
        low = F.conv2d(x, self.lora_a, None, c.stride, c.padding, c.dilation)
        return c(x) + self.scale * F.conv2d(low, self.lora_b)

    def merged(self) -> nn.Conv2d:
        out = copy.deepcopy(self.base)
        with torch.no_grad():
            out.weight += self.delta()
        return out


ADAPTERS: dict[type[nn.Module], type[LoRALinear] | type[LoRAConv2d]] = {
    nn.Linear: LoRALinear,
    nn.Conv2d: LoRAConv2d,
}


def inject_lora(
    model: nn.Module,
    rank: int,
    alpha: float,
    gen: torch.Generator,
    skip: frozenset[str] = frozenset(),
) -> int:
    """Wrap every Linear and Conv2d not in ``skip`` in place; returns how many were wrapped."""
    targets = [
        (n, m) for n, m in model.named_modules() if n and n not in skip and type(m) in ADAPTERS
    ]
    if not targets:
        raise ConfigError(["finetune.mode=lora: the model has no Linear or Conv2d layer"])
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, ADAPTERS[type(module)](module, rank, alpha, gen))
    return len(targets)


def merge_lora(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every adapter folded into its layer: the original names."""
    merged = copy.deepcopy(model)
    wrapped = [n for n, m in merged.named_modules() if isinstance(m, LoRALinear | LoRAConv2d)]
    for name in wrapped:
        parent_name, _, child = name.rpartition(".")
        parent = merged.get_submodule(parent_name)
        setattr(parent, child, getattr(parent, child).merged())
    return merged
