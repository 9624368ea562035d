"""The compression feature: uplink and downlink codecs, error feedback, pruning."""

from __future__ import annotations

from fedloom.compression.blob import SpecCodec
from fedloom.compression.codec import Codec, RawCodec
from fedloom.compression.config import CompressionConfig
from fedloom.compression.feedback import ErrorFeedback
from fedloom.compression.prune import MagnitudePruner
from fedloom.compression.spec import parse_spec
from fedloom.core.errors import ConfigError
from fedloom.parts import Parts


def build_codec(spec: str, cfg: CompressionConfig, seed: int) -> Codec:
    """``none`` keeps the safetensors baseline; any other spec compresses."""
    if spec == "none":
        return RawCodec()
    return SpecCodec(spec, seed=seed, chunk=cfg.chunk)


def compression_feature(parts: Parts) -> None:
    cfg, seed = parts.config.compression, parts.config.seed
    parts.down = build_codec(cfg.down, cfg, seed)
    parts.up = build_codec(cfg.up, cfg, seed)
    if cfg.error_feedback and not parse_spec(cfg.up).lossless:
        parts.client_hooks.append(ErrorFeedback(parts.up))
    if cfg.prune > 0:
        if parts.config.finetune.mode != "full":
            raise ConfigError(
                [
                    f"compression.prune prunes the whole global model; with finetune.mode="
                    f"{parts.config.finetune.mode} only a part of it (LoRA adapters, the "
                    "selected layers) is global: use finetune.mode=full"
                ]
            )
        pruner = MagnitudePruner(cfg.prune, cfg.prune_ramp)
        parts.strategy.apply = pruner.wrap(parts.strategy.apply)  # type: ignore[method-assign,assignment]
        parts.metric_sources.append(pruner.metrics)
        parts.stateful["compression.prune"] = pruner
        parts.notes["prune_target"] = cfg.prune
    parts.notes["compression"] = {"up": cfg.up, "down": cfg.down, "chunk": cfg.chunk}
