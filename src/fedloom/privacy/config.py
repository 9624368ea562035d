"""The privacy section of a run config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PrivacyMode = Literal["none", "central", "local", "dpsgd"]
AccountantName = Literal["rdp", "prv"]


class PrivacyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: PrivacyMode = "none"
    """``central``: user-level DP-FedAvg (trusted server clips, sums, noises);
    ``local``: each client clips and noises its own update; ``dpsgd``: sample-level
    DP-SGD inside each client's training (Opacus); ``none``: no privacy."""
    clip: float = Field(1.0, gt=0)
    """L2 bound on one client's update (central, local) or one sample's gradient (dpsgd);
    the initial clip when ``adaptive_clip`` is on."""
    noise_multiplier: float | None = Field(None, ge=0)
    """Noise std / clip. Leave unset and give ``target_epsilon`` to calibrate it."""
    target_epsilon: float | None = Field(None, gt=0)
    """Calibrate ``noise_multiplier`` so that ε after ``rounds`` rounds is just below this."""
    delta: float = Field(1e-5, gt=0, lt=1)
    """δ of the (ε, δ) guarantee; keep it well below 1 / (number of users or samples)."""
    max_epsilon: float | None = Field(None, gt=0)
    """Budget: the run stops cleanly before a round that would push ε above this."""
    accountant: AccountantName = "prv"
    """Opacus accountant: ``prv`` (numerical PRV, tighter; default, as in Opacus; falls back
    to RDP where its analysis fails) or ``rdp`` (Rényi DP)."""
    granularity: float | None = Field(None, gt=0)
    """``central``, ``local``: the step γ of the integer grid on which updates are summed
    and noised. Unset: the largest power of two with γ·√d/2 ≤ clip/100 (rounding inflates
    the sensitivity by at most 1%) and noise std ≥ 1024·γ."""
    secure_rng: bool = False
    """Draw every privacy-relevant random choice (client sampling, DP-SGD batches, noise)
    from the OS's cryptographically secure source: the deployment setting, not
    reproducible; central and local DP's noise then comes from OpenDP's exact discrete
    Gaussian sampler. Off, the draws follow ``seed``: for research only."""
    release_client_info: bool = False
    """Write client ids and per-client statistics (participants, partition table) to the
    run directory even in a DP run; they are outside ε, so off by default."""
    adaptive_clip: bool = False
    """``central`` only: the clip tracks a quantile of update norms (Andrew et al. 2021)."""
    target_quantile: float = Field(0.5, gt=0, lt=1)
    """Adaptive clipping: the fraction of updates the clip should leave unclipped."""
    clip_lr: float = Field(0.2, gt=0)
    """Adaptive clipping: geometric step size η of the clip update."""
    count_noise_multiplier: float | None = Field(None, gt=0)
    """Adaptive clipping: std σ_b of the noise on the unclipped count; default
    expected clients per round / 20 (the paper's choice)."""

    @property
    def withholds_client_info(self) -> bool:
        """A DP run that must not release client ids or per-client statistics."""
        return self.mode != "none" and not self.release_client_info

    @model_validator(mode="after")
    def _noise_is_known(self) -> PrivacyConfig:
        if self.mode == "none":
            return self
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError(
                f"privacy.mode={self.mode} needs exactly one of privacy.noise_multiplier "
                "or privacy.target_epsilon"
            )
        if self.granularity is not None and self.mode not in ("central", "local"):
            raise ValueError("privacy.granularity is only used by privacy.mode=central or local")
        if self.adaptive_clip and self.mode != "central":
            raise ValueError("privacy.adaptive_clip is only available with privacy.mode=central")
        return self
