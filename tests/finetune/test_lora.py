"""Native LoRA: starts at the base model, trains only adapters, merges exactly."""

import pytest
import torch
from torch import nn

from fedloom.core.errors import ConfigError
from fedloom.finetune.lora import LoRAConv2d, LoRALinear, inject_lora, merge_lora
from fedloom.models.zoo import CNN


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return CNN((1, 8, 8), 10).eval()


def test_adapted_model_starts_at_the_base_model():
    model = _cnn()
    x = torch.randn(5, 1, 8, 8)
    before = model(x)
    assert inject_lora(model, rank=2, alpha=4.0, gen=torch.Generator().manual_seed(1)) == 4
    assert torch.equal(model(x), before)  # B = 0
    names = [n for n, _ in model.named_parameters()]
    assert "conv1.lora_a" in names and "fc2.base.weight" in names
    assert tuple(model.get_submodule("conv2").lora_a.shape) == (2, 32, 3, 3)
    assert tuple(model.get_submodule("conv2").lora_b.shape) == (64, 2, 1, 1)


def test_merged_model_computes_the_adapter_model_outputs():
    model = _cnn()
    inject_lora(model, rank=3, alpha=6.0, gen=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALinear | LoRAConv2d):
                module.lora_b.normal_(0, 0.5)  # as if trained
    merged = merge_lora(model)
    x = torch.randn(7, 1, 8, 8)
    assert torch.allclose(merged(x), model(x), atol=1e-5)
    assert sorted(n for n, _ in merged.named_parameters()) == sorted(
        n for n, _ in _cnn().named_parameters()
    )
    assert not torch.allclose(merged(x), _cnn()(x), atol=1e-3)  # the adapters did change it


def test_linear_delta_is_scaled_b_times_a():
    base = nn.Linear(3, 2)
    layer = LoRALinear(base, rank=1, alpha=2.0, gen=torch.Generator().manual_seed(0))
    with torch.no_grad():
        layer.lora_a.copy_(torch.tensor([[1.0, 2.0, 3.0]]))
        layer.lora_b.copy_(torch.tensor([[1.0], [-1.0]]))
    expected = 2.0 * torch.tensor([[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]])
    assert torch.equal(layer.delta(), expected)
    assert torch.allclose(layer.merged().weight, base.weight + expected)


def test_models_without_adaptable_layers_are_refused():
    with pytest.raises(ConfigError, match="no Linear or Conv2d"):
        inject_lora(nn.Sequential(nn.ReLU()), 2, 4.0, torch.Generator())


def test_convolution_padding_other_than_zeros_is_refused() -> None:
    conv = nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect")
    with pytest.raises(ConfigError, match="zero padding"):
        LoRAConv2d(conv, rank=2, alpha=2.0, gen=torch.Generator().manual_seed(0))
