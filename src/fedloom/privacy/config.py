"""The privacy section of a run config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PrivacyMode = Literal["none", "central", "local", "dpsgd", "distributed"]
AccountantName = Literal["rdp", "prv"]
ScheduleName = Literal["constant", "linear", "cosine", "step"]


class TierConfig(BaseModel):
    """One privacy tier: its clients' budget, and which clients belong to it."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    epsilon: float = Field(gt=0)
    """The tier's budget: ε after ``rounds`` lands in [0.95, 1] of it (or below, reported,
    where even sampling at rate 1 cannot spend it)."""
    fraction: float | None = Field(None, gt=0, le=1)
    """This fraction of the clients, drawn by a seeded permutation."""
    clients: tuple[int, ...] | None = None
    """Or these client indices."""

    @model_validator(mode="after")
    def _one_membership(self) -> TierConfig:
        if (self.fraction is None) == (self.clients is None):
            raise ValueError("a privacy tier needs exactly one of fraction or clients")
        if self.clients is not None and (not self.clients or min(self.clients) < 0):
            raise ValueError("a privacy tier's clients must be a non-empty list of indices >= 0")
        return self


class PrivacyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    mode: PrivacyMode = "none"
    """``central``: user-level DP-FedAvg (trusted server clips, sums, noises);
    ``local``: each client clips and noises its own update; ``dpsgd``: sample-level
    DP-SGD inside each client's training (Opacus); ``distributed``: with
    ``secure.mode=secagg``, each client adds its share of discrete Gaussian noise to its
    clipped, rotated update (Kairouz, Liu, Steinke 2021); ``none``: no privacy."""
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

    schedule: ScheduleName = "constant"
    """How the noise multiplier moves over rounds (constant within a round): ``linear`` and
    ``cosine`` go from 1 to ``final_noise_ratio`` times the first round's; ``step`` follows
    ``schedule_steps``. With ``target_epsilon`` (or tiers) one scale factor calibrates the
    whole schedule."""
    final_noise_ratio: float = Field(1.0, gt=0)
    """``linear``, ``cosine``: the last round's noise multiplier over the first round's."""
    schedule_steps: tuple[tuple[int, float], ...] = ()
    """``step``: ``[[round, ratio], ...]``: from that round on, the multiplier is ``ratio``
    times the first round's (1 before the first entry)."""
    tiers: tuple[TierConfig, ...] = ()
    """Individual budgets: ``[{epsilon, fraction}|{epsilon, clients}, ...]``. All tiers share
    the noise; each tier's sampling rate is calibrated to its budget."""

    @property
    def withholds_client_info(self) -> bool:
        """A DP run that must not release client ids or per-client statistics."""
        return self.mode != "none" and not self.release_client_info

    @model_validator(mode="after")
    def _noise_is_known(self) -> PrivacyConfig:
        if self.mode == "none":
            if self.schedule != "constant" or self.tiers:
                raise ValueError("privacy.schedule and privacy.tiers need a privacy.mode")
            return self
        self._check_schedule()
        if self.tiers:
            if self.target_epsilon is not None:
                raise ValueError(
                    "privacy.tiers sets each tier's budget: drop privacy.target_epsilon "
                    "(give privacy.noise_multiplier, or neither to calibrate it to the tiers)"
                )
            self._check_tiers()
        elif (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError(
                f"privacy.mode={self.mode} needs exactly one of privacy.noise_multiplier "
                "or privacy.target_epsilon"
            )
        if self.granularity is not None and self.mode not in ("central", "local"):
            raise ValueError("privacy.granularity is only used by privacy.mode=central or local")
        if self.adaptive_clip and self.mode != "central":
            raise ValueError("privacy.adaptive_clip is only available with privacy.mode=central")
        return self

    def _check_schedule(self) -> None:
        if self.schedule == "step":
            rounds = [r for r, _ in self.schedule_steps]
            if not rounds:
                raise ValueError("privacy.schedule=step needs privacy.schedule_steps")
            if rounds != sorted(set(rounds)) or rounds[0] < 1:
                raise ValueError(
                    "privacy.schedule_steps: rounds must be >= 1 and strictly increasing"
                )
            if any(not ratio > 0 for _, ratio in self.schedule_steps):
                raise ValueError("privacy.schedule_steps: every ratio must be > 0")
        elif self.schedule_steps:
            raise ValueError("privacy.schedule_steps is only used by privacy.schedule=step")
        if self.schedule in ("constant", "step") and self.final_noise_ratio != 1.0:
            raise ValueError("privacy.final_noise_ratio is only used by schedule=linear or cosine")

    def _check_tiers(self) -> None:
        by_fraction = [t for t in self.tiers if t.fraction is not None]
        if by_fraction and len(by_fraction) != len(self.tiers):
            raise ValueError("privacy.tiers: give every tier a fraction, or every tier clients")
        if by_fraction and abs(sum(t.fraction or 0.0 for t in self.tiers) - 1.0) > 1e-9:
            raise ValueError("privacy.tiers: the fractions must sum to 1")
        listed = [c for t in self.tiers for c in t.clients or ()]
        if len(listed) != len(set(listed)):
            raise ValueError("privacy.tiers: a client is listed in two tiers")
        if self.adaptive_clip:
            raise ValueError("privacy.tiers cannot be combined with privacy.adaptive_clip")
