import pytest
import torch

from fedloom.core.errors import ConfigError
from fedloom.models.registry import available_models, build_model


@pytest.mark.parametrize(
    ("name", "shape", "count"),
    [
        ("cnn_mcmahan", (1, 28, 28), 1_663_370),
        ("mlp_2nn", (1, 28, 28), 199_210),
        # conv 1->32 (320) + conv 32->64 (18,496) + fc 9216->128 (1,179,776) + fc 128->10 (1,290)
        ("cnn", (1, 28, 28), 1_199_882),
        # on 8x8 digits fc1 is sized from the 2x2x64 feature map: 256*128+128 = 32,896
        ("cnn", (1, 8, 8), 320 + 18_496 + 32_896 + 1_290),
        ("logreg", (1, 28, 28), 7_850),
    ],
)
def test_parameter_counts(name, shape, count):
    model = build_model(name, shape, 10)
    assert sum(p.numel() for p in model.parameters()) == count
    assert model(torch.zeros(2, *shape)).shape == (2, 10)


def test_unknown_model_lists_the_allowed_ones():
    with pytest.raises(ConfigError) as error:
        build_model("resnet9000", (1, 8, 8), 10)
    for name in available_models():
        assert name in str(error.value)
