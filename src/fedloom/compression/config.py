"""The compression section of a run config: what the uplink and downlink codecs are."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedloom.compression.spec import parse_spec


class CompressionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    up: str = "none"
    """Uplink codec spec: ``none``, ``fp16``, ``bf16``, ``int8``, ``int4``, ``topk:F``,
    ``randk:F``, or a sparsifier and a quantizer joined by ``+`` (``topk:0.01+int8``)."""
    down: str = "none"
    """Downlink codec spec for the global model: ``none``, ``fp16``, ``bf16``, ``int8``,
    ``int4`` (no sparsifier: use ``prune`` to sparsify the model itself)."""
    chunk: int | None = Field(None, ge=1)
    """Values per quantization scale for int8/int4; ``null`` means one scale per tensor."""
    error_feedback: bool = True
    """Keep what a lossy uplink codec dropped on the client and add it to the next update."""
    prune: float = Field(0.0, ge=0.0, lt=1.0)
    """Target sparsity of the global model's weight tensors (magnitude pruning, per tensor)."""
    prune_ramp: int = Field(0, ge=0)
    """Rounds over which the sparsity grows linearly to ``prune`` (0: from round 1)."""

    @field_validator("up")
    @classmethod
    def _valid_up(cls, spec: str) -> str:
        parse_spec(spec)
        return spec

    @field_validator("down")
    @classmethod
    def _valid_down(cls, spec: str) -> str:
        if parse_spec(spec).sparsifier is not None:
            raise ValueError(
                f"{spec!r}: a sparsifier would drop most of the model's weights; "
                "use compression.prune to sparsify the global model"
            )
        return spec
