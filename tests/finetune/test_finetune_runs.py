"""Federated fine-tuning runs from a pretrained checkpoint (sklearn digits)."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from fedloom.config import load_config
from fedloom.core.errors import ConfigError
from fedloom.experiment import Experiment
from fedloom.finetune.pretrain import pretrain
from fedloom.models.registry import build_model

FIRST, SECOND = "data.classes=[0,1,2,3,4]", "data.classes=[5,6,7,8,9]"
FED = [
    "model.name=mlp_2nn",
    "clients.num=4",
    "clients.per_round=4",
    "train.batch_size=16",
    "data.partition=dirichlet",  # label skew across the fine-tuning clients
    "data.alpha=1.0",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """mlp_2nn pretrained centrally on digits 0-4 only."""
    out = tmp_path_factory.mktemp("pre") / "digits04.safetensors"
    result = pretrain(load_config(None, ["model.name=mlp_2nn", FIRST]), out, epochs=3)
    assert result.test_accuracy > 0.95 and result.num_examples == 721
    return out


def _experiment(tmp_path, name, ckpt, *extra, rounds=1):
    overrides = [*FED, SECOND, f"model.checkpoint={ckpt}", f"rounds={rounds}"]
    return Experiment(load_config(None, [*overrides, f"output_dir={tmp_path / name}", *extra]))


@pytest.mark.slow
def test_frozen_parameters_stay_bit_identical(tmp_path, checkpoint):
    pre = load_file(checkpoint)
    exp = _experiment(tmp_path, "last", checkpoint, "finetune.mode=last_k")
    assert set(exp.server.global_state) == {"5.weight", "5.bias"}  # the last Linear(200, 10)
    result = exp.run()
    line = result.metrics[0]
    # 2,010 float32 values per client each way, plus headers
    assert 4 * 2010 * 4 < line["bytes_up"] < 4 * 2010 * 4 + 4 * 600
    assert 4 * 2010 * 4 < line["bytes_down"] < 4 * 2010 * 4 + 4 * 600
    final = load_file(result.run_dir / "model.safetensors")
    workspace = next(iter(exp.clients.values())).model.state_dict()
    assert set(final) == set(pre)
    for name in pre:
        if name.startswith("5."):
            assert not torch.equal(final[name], pre[name])
        else:
            assert torch.equal(final[name], pre[name]) and torch.equal(workspace[name], pre[name])


@pytest.mark.slow
def test_lora_run_exports_the_merged_model(tmp_path, checkpoint):
    exp = _experiment(tmp_path, "lora", checkpoint, "finetune.mode=lora", "finetune.lora_rank=2")
    assert all("lora_" in n for n in exp.server.global_state)
    result = exp.run()
    merged = load_file(result.run_dir / "model.safetensors")
    assert set(merged) == set(load_file(checkpoint))  # original names, adapters folded in
    x = exp.data.test.x[:32]
    plain = build_model("mlp_2nn", exp.data.input_shape, exp.data.num_classes)
    plain.load_state_dict(merged)
    plain.eval(), exp.model.eval()
    with torch.no_grad():
        assert torch.allclose(plain(x), exp.model(x), atol=1e-5)
    # 4 clients each send 2 * (2*64 + 200*2 + 2*200 + 200*2 + 2*200 + 10*2) floats
    lora_params = 2 * 64 + 200 * 2 + 2 * 200 + 200 * 2 + 2 * 200 + 10 * 2
    assert result.summary["num_parameters"] == lora_params


def test_checkpoint_mismatch_lists_every_problem(tmp_path, checkpoint):
    bad = {n: t for n, t in load_file(checkpoint).items() if n != "1.bias"}
    bad["5.weight"] = torch.zeros(5, 200)
    bad["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.safetensors"
    save_file(bad, path)
    with pytest.raises(ConfigError) as info:
        _experiment(tmp_path, "bad", path)
    problems = "\n".join(info.value.problems)
    assert "missing from checkpoint: 1.bias" in problems
    assert "not in the model: extra.weight" in problems
    assert "5.weight: checkpoint shape (5, 200) != model shape (10, 200)" in problems


@pytest.mark.slow
def test_finetuning_on_new_digits_gains_over_the_pretrained_start(tmp_path, checkpoint):
    start = _experiment(tmp_path, "start", checkpoint)
    start_accuracy = start._evaluate(start.server.global_state)["test_accuracy"]
    assert start_accuracy < 0.05  # the pretrained head has never seen 5-9
    tune = ("finetune.mode=last_k", "train.local_epochs=3")
    result = _experiment(tmp_path, "lastk", checkpoint, *tune, rounds=3).run()
    # measured: 0.00 -> 0.72 after 3 rounds (head only); the margin absorbs platforms
    assert result.summary["final_test_accuracy"] - start_accuracy > 0.5


@pytest.mark.slow
def test_privacy_clips_only_the_trained_part_before_compression(tmp_path, checkpoint, monkeypatch):
    from fedloom.privacy import central

    seen: list[tuple[float, object]] = []
    add = central.DPSumAggregator.add

    def spy(self, client_id, update, meta):
        seen.append((float(torch.cat([t.flatten() for t in update.values()]).norm()), meta))
        add(self, client_id, update, meta)

    monkeypatch.setattr(central.DPSumAggregator, "add", spy)
    pre = load_file(checkpoint)
    exp = _experiment(
        tmp_path,
        "dp",
        checkpoint,
        "finetune.mode=last_k",
        "privacy.mode=central",
        "privacy.clip=0.05",
        "privacy.noise_multiplier=0.5",
        "compression.up=topk:0.25+int8",
    )
    result = exp.run()
    # one round, 4 clients: what arrived is the clipped head update, sparsified and
    # quantized after clipping (its norm would be above 0.05 had the codec come first)
    assert len(seen) == 4
    clip = 0.05
    for norm, meta in seen:
        assert norm <= clip * 1.05  # int8 stochastic rounding may add a little
        assert meta[central.WITHIN_CLIP] is False  # every raw update was above the clip
    line = result.metrics[0]
    assert line["epsilon"] > 0 and line["delta"] == 1e-5
    # only the head travels: a quarter of 5.weight (500 of 2,000) and of 5.bias (3 of 10),
    # each a uint16 index and an int8 value, plus scales and headers, from 4 clients
    assert 4 * 503 * 3 < line["bytes_up"] < 4 * (503 * 3 + 600)
    final = load_file(result.run_dir / "model.safetensors")
    for name in pre:
        assert torch.equal(final[name], pre[name]) == (not name.startswith("5."))
