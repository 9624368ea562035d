"""Codecs come from the registry: a user's codec runs a federation and gets error
feedback; unknown names are refused listing the registered codecs; error feedback, now a
codec wrapper, covers the tensors SCAFFOLD adds after training."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, save

from fedloom.compression.blob import SpecCodec
from fedloom.compression.codec import RawCodec
from fedloom.compression.dgc import CorrectedCodec, Corrections
from fedloom.compression.feedback import RESIDUAL_PREFIX, FeedbackCodec, residual_of
from fedloom.compression.prune import MagnitudePruner, PrunedStrategy
from fedloom.compression.select import build_codec, choose_codec, is_lossless
from fedloom.config import load_config
from fedloom.core.codec import CodecContext, Key, Warmup
from fedloom.core.errors import ConfigError
from fedloom.core.registry import REGISTRY, register
from fedloom.core.tensors import Tensors
from fedloom.experiment import Experiment
from fedloom.server.strategy import Strategy, sgd

TINY = ["model.name=logreg", "clients.num=4", "clients.per_round=4", "data.name=digits"]


class HalfPrecision:
    """A user's codec: float16 values in safetensors (lossy)."""

    name = "halfprec"

    def encode(self, tensors: Tensors, key: Key = ()) -> bytes:
        return save({n: t.detach().half().contiguous() for n, t in tensors.items()})

    def decode(self, data: bytes | bytearray | memoryview) -> Tensors:
        return {n: t.float() for n, t in load(bytes(data)).items()}


built: list[tuple[str | None, CodecContext]] = []


@pytest.fixture
def halfprec() -> Iterator[None]:
    @register("codec", "halfprec", capabilities={"lossy"})
    def factory(arg: str | None, ctx: CodecContext) -> HalfPrecision:
        if arg not in (None, "ok"):
            raise ValueError(f"halfprec takes no argument but 'ok', got {arg!r}")
        built.append((arg, ctx))
        return HalfPrecision()

    built.clear()
    yield
    REGISTRY.unregister("codec", "halfprec")


def test_a_user_codec_runs_a_federation_with_error_feedback(halfprec, tmp_path: Path) -> None:
    cfg = load_config(
        None, [*TINY, "rounds=2", f"output_dir={tmp_path}", "compression.up=halfprec"]
    )
    exp = Experiment(cfg)
    assert isinstance(exp.parts.up, FeedbackCodec)
    assert isinstance(exp.parts.up.inner, HalfPrecision)
    # every uplink factory gets the warm-up: a plugin sparsifier may follow it
    assert built == [(None, CodecContext(cfg.seed, None, "up", Warmup(3, 0.1)))]
    result = exp.run()
    assert len(result.metrics) == 2
    # logreg on digits, 650 values: float16 saves 2 bytes a value on each of 4 uploads
    # (the safetensors header has the same length as float32's)
    plain = Experiment(load_config(None, [*TINY, "rounds=1", f"output_dir={tmp_path}/raw"]))
    raw_bytes = plain.run().metrics[0]["bytes_up"]
    assert [m["bytes_up"] for m in result.metrics] == [raw_bytes - 4 * 650 * 2] * 2
    for client in exp.clients.values():
        residual = residual_of(client.state)
        assert sorted(residual) == sorted(n for n, _ in exp.model.named_parameters())
        # float16 rounding drops something from every non-trivial update
        assert sum(float(r.abs().sum()) for r in residual.values()) > 0


def test_a_user_codec_gets_its_argument_and_a_bad_one_is_a_config_error(halfprec) -> None:
    parse = load_config(None, ["compression.up=halfprec:ok"]).compression
    build_codec(parse.up, parse, seed=3, direction="up")
    assert built == [("ok", CodecContext(3, None, "up", Warmup(3, 0.1)))]
    cfg = load_config(None, ["compression.up=halfprec:bad"]).compression  # name checked only
    with pytest.raises(ConfigError, match=r"compression.up: halfprec takes no argument"):
        build_codec(cfg.up, cfg, seed=3, direction="up")


def test_an_unknown_codec_is_refused_listing_the_registered_ones(halfprec) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, ["compression.up=halfprek"])
    message = str(error.value)
    assert "compression.up" in message and "'halfprek' is not registered" in message
    assert "did you mean 'halfprec'" in message
    for name in ("none", "int8", "topk", "halfprec", "fp16"):
        assert name in message.split("registered:")[-1]
    with pytest.raises(ConfigError, match="compression.down.*'zip' is not registered"):
        load_config(None, ["compression.down=zip"])


def test_plugin_codecs_do_not_combine_with_spec_codecs(halfprec) -> None:
    with pytest.raises(ConfigError, match="only spec codecs .* combine with '\\+'"):
        load_config(None, ["compression.up=halfprec+int8"])


def test_lossless_is_the_spec_or_the_capability(halfprec) -> None:
    assert is_lossless("none") and is_lossless("f32")
    assert not is_lossless("int8") and not is_lossless("topk:0.5+f32")
    assert not is_lossless("halfprec")
    assert choose_codec("topk:0.01+int8").component.name == "topk"


def test_registered_codecs_build_the_built_in_codecs() -> None:
    cfg = load_config(None, ["compression.up=topk:0.25+int8", "compression.chunk=16"])
    up = build_codec(cfg.compression.up, cfg.compression, seed=7, direction="up")
    assert isinstance(up, SpecCodec) and up.seed == 7 and up.chunk == 16
    assert up.spec.sparsifier == "topk" and up.spec.quantizer == "int8"
    assert isinstance(build_codec("none", cfg.compression, 7, "down"), RawCodec)
    with pytest.raises(ConfigError, match="codec 'none' takes no argument"):
        build_codec("none:x", cfg.compression, 7, "down")


def test_lossless_and_disabled_uplinks_get_no_feedback(tmp_path: Path) -> None:
    for extra in (
        ["compression.up=f32"],
        ["compression.up=int8", "compression.error_feedback=false"],
    ):
        exp = Experiment(load_config(None, [*TINY, f"output_dir={tmp_path}", *extra]))
        assert not isinstance(exp.parts.up, FeedbackCodec)
    exp = Experiment(load_config(None, [*TINY, f"output_dir={tmp_path}", "compression.up=int8"]))
    assert isinstance(exp.parts.up, FeedbackCodec)


def test_sparse_uplinks_get_dgc_ahead_of_error_feedback_by_default(tmp_path: Path) -> None:
    def uplink(*extra: str) -> object:
        cfg = load_config(None, [*TINY, f"output_dir={tmp_path}", *extra])
        return Experiment(cfg).parts.up

    up = uplink("compression.up=topk:0.01+int8")
    assert isinstance(up, CorrectedCodec) and up.corrections == Corrections(0.6, True, 2.0)
    assert isinstance(up.feedback.inner, SpecCodec)
    assert up.feedback.inner.warmup == Warmup(3, 0.1)
    fixes = uplink("compression.up=randk:0.1", "compression.clip=null", "compression.momentum=0.5")
    assert isinstance(fixes, CorrectedCodec) and fixes.corrections == Corrections(0.5, True, None)
    off = uplink("compression.up=topk:0.1", "compression.momentum=0", "compression.clip=null")
    assert type(off) is FeedbackCodec  # nothing left to correct: error feedback alone
    assert type(uplink("compression.up=int8")) is FeedbackCodec  # dense: no DGC
    plain = uplink("compression.up=topk:0.01", "compression.error_feedback=false")
    assert isinstance(plain, SpecCodec) and plain.warmup == Warmup(3, 0.1)
    # a warm-up that starts no denser than the spec changes nothing
    assert uplink("compression.up=topk:0.1").feedback.inner.warmup is None
    cold = uplink("compression.up=topk:0.01", "compression.warmup_rounds=0")
    assert isinstance(cold, CorrectedCodec) and cold.feedback.inner.warmup is None
    cfg = load_config(None, ["compression.down=int8"]).compression
    assert build_codec(cfg.down, cfg, seed=0, direction="down").warmup is None


def test_scaffold_control_delta_gets_error_feedback(tmp_path: Path) -> None:
    overrides = [
        *TINY,
        "rounds=2",
        f"output_dir={tmp_path}",
        "strategy.name=scaffold",
        "train.momentum=0",
        "compression.up=topk:0.1",
    ]
    exp = Experiment(load_config(None, overrides))
    exp.run()
    params = sorted(n for n, _ in exp.model.named_parameters())
    for client in exp.clients.values():
        residual = residual_of(client.state)
        dc = sorted(n for n in residual if n.startswith("aux/scaffold_dc/"))
        assert dc == [f"aux/scaffold_dc/{n}" for n in params]
        # topk keeps 10% of each tensor: the rest of Δc_i waits in the residual
        assert all(float(residual[n].abs().sum()) > 0 for n in dc)
        assert all(RESIDUAL_PREFIX + n in client.state for n in params)


def test_pruned_strategy_prunes_after_the_inner_apply() -> None:
    inner = Strategy("fedavg", sgd(1.0))
    strategy = PrunedStrategy(inner, MagnitudePruner(0.5, ramp=0))
    state = {"w": torch.tensor([[4.0, -3.0], [2.0, 1.0]]), "b": torch.tensor([0.5])}
    strategy.start(state)
    delta = {"w": torch.tensor([[1.0, 1.0], [1.0, 0.5]]), "b": torch.tensor([0.25])}
    new = strategy.apply(state, delta)  # FedAvg's step: [[5, -2], [3, 1.5]], then pruned
    assert torch.equal(new["w"], torch.tensor([[5.0, 0.0], [3.0, 0.0]]))
    assert torch.equal(new["b"], torch.tensor([0.75]))  # biases are not pruned
    assert strategy.pruner.sparsity == 0.5 and strategy.name == "fedavg"
    assert strategy.state_dict()[1] == inner.state_dict()[1]
