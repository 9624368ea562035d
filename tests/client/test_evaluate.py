import pytest
import torch
from torch.nn import functional as F

from fedloom.client.evaluate import evaluate
from fedloom.data.base import TensorData
from fedloom.models.registry import build_model


@pytest.mark.parametrize("name", ["cnn", "mlp_2nn"])
def test_evaluate_matches_a_plain_pass_and_leaves_the_model_alone(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, (1, 28, 28), 10)
    data = TensorData(torch.rand(300, 1, 28, 28), torch.randint(0, 10, (300,)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    loss, accuracy = evaluate(model, data, batch_size=128)  # 3 batches, the last one short
    model.eval()
    with torch.no_grad():
        logits = model(data.x)
    assert loss == pytest.approx(float(F.cross_entropy(logits, data.y)), rel=1e-5)
    assert accuracy == pytest.approx(int((logits.argmax(1) == data.y).sum()) / 300, rel=1e-12)
    model.train()
    assert model.training  # evaluate restored the mode it found
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]) and value.is_contiguous()
