import math

import torch
from torch import nn

from fedloom.client.client import Client
from fedloom.client.trainer import LocalTrainer, TrainConfig
from fedloom.compression.codec import RawCodec
from fedloom.core.message import Message
from fedloom.data.base import TensorData

DATA = TensorData(torch.randn(23, 4), torch.randint(0, 3, (23,)))


def count_steps(cfg: TrainConfig) -> int:
    model = nn.Linear(4, 3)
    return LocalTrainer(cfg).train(model, DATA, torch.Generator().manual_seed(0)).steps


def test_epochs_steps_and_full_batch():
    assert count_steps(TrainConfig(local_epochs=2, batch_size=5)) == 2 * math.ceil(23 / 5)
    assert count_steps(TrainConfig(local_steps=11, batch_size=5)) == 11
    assert count_steps(TrainConfig(local_epochs=3, batch_size=None)) == 3


def test_one_full_batch_step_is_plain_gradient_descent():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = nn.functional.cross_entropy(model(DATA.x), DATA.y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    result = LocalTrainer(TrainConfig(local_steps=1, batch_size=None, lr=0.5)).train(
        model, DATA, torch.Generator()
    )
    for (name, p), g in zip(model.named_parameters(), grads, strict=True):
        assert torch.allclose(p, start[name] - 0.5 * g, atol=1e-6)
    assert math.isclose(result.loss, loss.item(), rel_tol=1e-5)
    assert result.num_examples == 23


def test_client_returns_local_minus_global_and_is_reproducible():
    codec = RawCodec()
    model = nn.Linear(4, 3)
    global_state = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    client = Client("c", DATA, model, LocalTrainer(TrainConfig()), seed=1, down=codec, up=codec)
    fit = Message("fit", 3, "server", codec.encode(global_state))
    first, second = client.handle(fit), client.handle(fit)
    assert first.payload == second.payload  # same (seed, round, client): same update
    update = codec.decode(first.payload)
    local = {n: p.detach() for n, p in model.named_parameters()}
    assert all(torch.equal(update[n], local[n] - global_state[n]) for n in local)
    assert first.meta["num_examples"] == 23 and first.sender == "c" and first.round == 3
