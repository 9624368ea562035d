"""Whole runs with compression: bytes on the wire, accuracy, bit-identical resume."""

import pytest
import torch
from safetensors.torch import load_file

from fedloom.compression.blob import SpecCodec
from fedloom.compression.dgc import NORM_KEY, velocity_of
from fedloom.config import load_config
from fedloom.core.codec import Warmup, uplink_key
from fedloom.experiment import Experiment, resume

# mlp_2nn on digits: 55k parameters, a few seconds a run even on a busy CPU
SMALL = ["model.name=mlp_2nn", "clients.num=4", "clients.per_round=4", "train.batch_size=16"]


def _run(tmp_path, name, extra, rounds=3):
    cfg = load_config(None, [*SMALL, f"rounds={rounds}", f"output_dir={tmp_path / name}", *extra])
    return Experiment(cfg).run()


@pytest.mark.slow
def test_int8_and_topk_runs_learn_with_far_fewer_bytes(tmp_path):
    base = _run(tmp_path, "none", [])
    int8 = _run(tmp_path, "int8", ["compression.up=int8", "compression.down=int8"])
    # three rounds would all be warm-up rounds: the steady density is what is checked here
    topk = _run(tmp_path, "topk", ["compression.up=topk:0.01+int8", "compression.warmup_rounds=0"])
    b, q, k = base.summary, int8.summary, topk.summary
    assert b["final_test_accuracy"] > 0.85
    assert q["final_test_accuracy"] > b["final_test_accuracy"] - 0.03
    assert k["final_test_accuracy"] > 0.4  # 1% of the entries a round, 3 rounds; chance is 0.1
    assert b["total_bytes_up"] / q["total_bytes_up"] > 3.9
    assert b["total_bytes_down"] / q["total_bytes_down"] > 3.9
    assert b["total_bytes_up"] / k["total_bytes_up"] > 50
    assert k["total_bytes_down"] == b["total_bytes_down"]  # downlink left at float32


@pytest.mark.slow
def test_pruned_run_reports_its_sparsity(tmp_path):
    result = _run(tmp_path, "prune", ["compression.prune=0.7", "compression.prune_ramp=2"])
    assert [m["sparsity"] for m in result.metrics] == pytest.approx([0.35, 0.7, 0.7], abs=1e-3)
    weights = load_file(result.run_dir / "model.safetensors")
    zeros = sum(int((t == 0).sum()) for t in weights.values() if t.dim() >= 2)
    total = sum(t.numel() for t in weights.values() if t.dim() >= 2)
    assert zeros / total == pytest.approx(0.7, abs=1e-3)
    assert result.summary["final_test_accuracy"] > 0.8


@pytest.mark.slow
def test_warmup_rounds_send_more_then_the_spec_density(tmp_path):
    extra = ["compression.up=topk:0.01+int8", "compression.warmup_rounds=2"]
    result = _run(tmp_path, "warm", [*extra, "compression.warmup_density=0.25"], rounds=4)
    up = [m["bytes_up"] for m in result.metrics]
    model = result.run_dir / "model.safetensors"
    shapes = {n: t.shape for n, t in load_file(model).items()}
    codec = SpecCodec("topk:0.01+int8", seed=0, warmup=Warmup(2, 0.25))
    zeros = {n: torch.zeros(s) for n, s in shapes.items()}
    sizes = [codec.encoded_size(zeros, uplink_key(r, "0")) for r in (1, 2, 3)]
    assert sizes[0] > sizes[1] > sizes[2]  # densities 0.25, 0.05, then 0.01
    # each round's bytes are 4 clients' payloads plus frames that do not depend on density
    assert up[0] - up[2] == pytest.approx(4 * (sizes[0] - sizes[2]), abs=4 * 16)
    assert up[1] - up[2] == pytest.approx(4 * (sizes[1] - sizes[2]), abs=4 * 16)
    assert up[2] == pytest.approx(up[3], abs=4 * 16)


@pytest.mark.slow
def test_resume_mid_warmup_restores_the_velocity_bit_identically(tmp_path):
    extra = ["compression.up=topk:0.02+int8", "compression.warmup_rounds=3"]
    whole = _run(tmp_path, "whole", extra, rounds=4)
    _run(tmp_path, "split", extra, rounds=2)
    resumed = resume(tmp_path / "split", ["rounds=4"])
    assert all(velocity_of(c.state) and NORM_KEY in c.state for c in resumed.clients.values())
    after = resumed.run()
    a = load_file(whole.run_dir / "model.safetensors")
    b = load_file(tmp_path / "split" / "model.safetensors")
    assert all(a[n].equal(b[n]) for n in a)
    # rounds 3 (warm-up) and 4 (spec density) sent the same bytes as in the whole run
    assert [m["bytes_up"] for m in after.metrics] == [m["bytes_up"] for m in whole.metrics]


@pytest.mark.slow
def test_resume_with_error_feedback_is_bit_identical(tmp_path):
    extra = ["compression.up=topk:0.05+int4", "compression.down=int8", "compression.chunk=64"]
    whole = _run(tmp_path, "whole", extra, rounds=3)
    _run(tmp_path, "split", extra, rounds=2)
    resumed = resume(tmp_path / "split", ["rounds=3"])
    assert any(c.state for c in resumed.clients.values())  # residuals came back
    resumed.run()
    a = load_file(whole.run_dir / "model.safetensors")
    b = load_file(tmp_path / "split" / "model.safetensors")
    assert all(a[n].equal(b[n]) for n in a)
