"""The compression feature: uplink and downlink codecs, error feedback, pruning."""

from __future__ import annotations

from fedloom.compression.config import CompressionConfig
from fedloom.compression.dgc import CorrectedCodec, Corrections
from fedloom.compression.feedback import FeedbackCodec
from fedloom.compression.prune import MagnitudePruner, PrunedStrategy
from fedloom.compression.select import build_codec, is_lossless, is_sparse
from fedloom.core.codec import Codec
from fedloom.parts import Parts

__all__ = ["build_codec", "compression_feature"]


def compression_feature(parts: Parts) -> None:
    cfg, seed = parts.config.compression, parts.config.seed
    parts.down = build_codec(cfg.down, cfg, seed, "down")
    parts.up = uplink(cfg, build_codec(cfg.up, cfg, seed, "up"))
    if cfg.prune > 0:  # only with finetune.mode=full: checked with the config (fedloom.compat)
        pruner = MagnitudePruner(cfg.prune, cfg.prune_ramp)
        parts.strategy = PrunedStrategy(parts.strategy, pruner)
        parts.metric_sources.append(pruner.metrics)
        parts.stateful["compression.prune"] = pruner
        parts.notes["prune_target"] = cfg.prune
    parts.notes["compression"] = {"up": cfg.up, "down": cfg.down, "chunk": cfg.chunk}


def uplink(cfg: CompressionConfig, codec: Codec) -> Codec:
    """``codec`` as the clients encode with it: with error feedback when lossy, and with
    DGC's corrections ahead of it when it also sparsifies."""
    if not cfg.error_feedback or is_lossless(cfg.up):
        return codec
    # in the codec, error feedback covers every tensor sent, whatever transform added it
    feedback = FeedbackCodec(codec)
    fixes = Corrections(cfg.momentum, cfg.momentum_masking, cfg.clip)
    if is_sparse(cfg.up) and fixes.active:
        return CorrectedCodec(feedback, fixes)
    return feedback
