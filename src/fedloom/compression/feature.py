"""The compression feature: uplink and downlink codecs, error feedback, pruning."""

from __future__ import annotations

from fedloom.compression.feedback import FeedbackCodec
from fedloom.compression.prune import MagnitudePruner, PrunedStrategy
from fedloom.compression.select import build_codec, is_lossless
from fedloom.parts import Parts

__all__ = ["build_codec", "compression_feature"]


def compression_feature(parts: Parts) -> None:
    cfg, seed = parts.config.compression, parts.config.seed
    parts.down = build_codec(cfg.down, cfg, seed, "down")
    up = build_codec(cfg.up, cfg, seed, "up")
    # in the codec, error feedback covers every tensor sent, whatever transform added it
    parts.up = FeedbackCodec(up) if cfg.error_feedback and not is_lossless(cfg.up) else up
    if cfg.prune > 0:  # only with finetune.mode=full: checked with the config (fedloom.compat)
        pruner = MagnitudePruner(cfg.prune, cfg.prune_ramp)
        parts.strategy = PrunedStrategy(parts.strategy, pruner)
        parts.metric_sources.append(pruner.metrics)
        parts.stateful["compression.prune"] = pruner
        parts.notes["prune_target"] = cfg.prune
    parts.notes["compression"] = {"up": cfg.up, "down": cfg.down, "chunk": cfg.chunk}
