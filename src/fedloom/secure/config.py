"""The ``secure`` section of a run config: secure aggregation (SecAgg+) and its encoding."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_BITS = 64
"""Secure vectors are uint64: the widest modulus is 2**64."""

SecureMode = Literal["none", "secagg", "ckks"]


class SecureConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    mode: SecureMode = "none"
    """``secagg``: every round is a SecAgg+ round (Bell et al. 2020): the server learns
    only the sum of the clients' quantized, weighted updates; ``ckks``: clients encrypt
    their weighted updates under CKKS (TenSEAL), the server adds ciphertexts and a
    separate key holder decrypts only the sum; ``none``: plain updates."""
    neighbors: int | None = Field(None, ge=1)
    """Neighbours each client masks with and shares its secrets among; unset: 6·log2(n)
    rounded up to even, capped at n − 1 (n = clients.per_round)."""
    threshold: int | None = Field(None, ge=1)
    """Shares needed to recover a secret (at most neighbours − threshold dropouts per
    neighbourhood); unset: a strict majority of the neighbours."""
    bits: int | None = Field(None, ge=1, le=MAX_BITS)
    """Modulus 2**bits of the secure sum; unset: sized from quant_bits, max_weight and
    clients.per_round so that the sum never wraps. A value that could wrap is an error."""
    clip: float = Field(0.2, gt=0)
    """Each update coordinate is clipped to [-clip, clip] before quantization."""
    quant_bits: int = Field(8, ge=2, le=32)
    """Quantization levels: coordinates become integers in [-(2**(quant_bits-1)-1), +...],
    rounded stochastically (unbiased)."""
    max_weight: int = Field(1, ge=1)
    """Bound on a client's integer weight (its example count, capped); 1 weights every
    client equally. The weights are summed securely (or encrypted), never seen one by one."""
    loss_clip: float = Field(10.0, gt=0)
    """Each client's training loss is clipped to [0, loss_clip] and summed securely."""

    @model_validator(mode="after")
    def _threshold_fits(self) -> SecureConfig:
        if (
            self.neighbors is not None
            and self.threshold is not None
            and self.threshold > self.neighbors
        ):
            raise ValueError(
                f"secure.threshold ({self.threshold}) exceeds secure.neighbors ({self.neighbors})"
            )
        return self
