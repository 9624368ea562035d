"""The compression section of a run config: what the uplink and downlink codecs are."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedloom.compression.select import check_codec


class CompressionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    up: str = "none"
    """Uplink codec: ``none``, ``fp16``, ``bf16``, ``int8``, ``int4``, ``topk:F``,
    ``randk:F``, a sparsifier and a quantizer joined by ``+`` (``topk:0.01+int8``), or a
    registered plugin codec's ``name`` / ``name:ARG``."""
    down: str = "none"
    """Downlink codec for the global model: ``none``, ``fp16``, ``bf16``, ``int8``,
    ``int4`` (no sparsifier: use ``prune`` to sparsify the model itself), or a plugin's."""
    chunk: int | None = Field(None, ge=1)
    """Values per quantization scale for int8/int4; ``null`` means one scale per tensor."""
    error_feedback: bool = True
    """Keep what a lossy uplink codec dropped on the client and add it to the next update
    (the uplink codec is wrapped in ``FeedbackCodec``)."""
    momentum: float = Field(0.6, ge=0.0, lt=1.0)
    """Momentum correction of a sparse uplink with error feedback (Deep Gradient
    Compression): the client accumulates the velocity ``u = m·u + Δ`` of its updates into
    its residual instead of the raw update; 0 turns it off."""
    momentum_masking: bool = True
    """Zero the velocity at the coordinates a sparse uplink sent (momentum factor masking)."""
    clip: float | None = Field(2.0, gt=0)
    """Local clipping of a sparse uplink with error feedback: the update's L2 norm is
    capped at ``clip`` times the client's running norm before it is accumulated; null
    turns it off."""
    warmup_rounds: int = Field(3, ge=0)
    """Rounds over which a sparse uplink's density falls exponentially from
    ``warmup_density`` to its own fraction (0: no warm-up)."""
    warmup_density: float = Field(0.1, gt=0.0, le=1.0)
    """The density of round 1 of the warm-up."""
    prune: float = Field(0.0, ge=0.0, lt=1.0)
    """Target sparsity of the global model's weight tensors (magnitude pruning, per tensor)."""
    prune_ramp: int = Field(0, ge=0)
    """Rounds over which the sparsity grows linearly to ``prune`` (0: from round 1)."""

    @field_validator("up")
    @classmethod
    def _valid_up(cls, text: str) -> str:
        return check_codec(text, "up")

    @field_validator("down")
    @classmethod
    def _valid_down(cls, text: str) -> str:
        return check_codec(text, "down")
