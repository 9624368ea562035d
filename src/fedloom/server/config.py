"""The strategy section of a run config: which registered strategy and aggregator, with
the shared hyperparameters of the built-in ones and a component's own ``params``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fedloom.core.registry import REGISTRY, checked_params, registered


class StrategyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: str = "fedavg"
    """A registered strategy: fedavg, fedavgm, fedadam, fedyogi, fedadagrad, fedprox,
    scaffold, fednova, feddf, fedmd (distillation), or one a plugin registers."""
    params: dict[str, Any] = Field(default_factory=dict)
    """The strategy's own settings, checked against its declared params model."""
    server_lr: float = Field(1.0, gt=0)
    """Server learning rate on the pseudo-gradient (1.0 is plain FedAvg)."""
    server_momentum: float = Field(0.9, ge=0, lt=1)
    """Server momentum, used by ``fedavgm``."""
    beta1: float = Field(0.9, ge=0, lt=1)
    """First-moment decay of ``fedadam``/``fedyogi``/``fedadagrad`` (Reddi et al. 2021)."""
    beta2: float = Field(0.99, ge=0, lt=1)
    """Second-moment decay of ``fedadam``/``fedyogi``."""
    tau: float = Field(1e-3, gt=0)
    """Adaptivity: added to sqrt(v) in the adaptive server optimizers."""
    mu: float = Field(0.01, ge=0)
    """FedProx proximal weight: each client minimises loss + mu/2 ||w - w_global||^2."""
    aggregator: str = "mean"
    """How updates are combined: the weighted mean, a robust rule (median, trimmed_mean,
    krum, multikrum, norm_bound: each holds every update) or a registered one."""
    trim_beta: float = Field(0.1, ge=0, lt=0.5)
    """``trimmed_mean``: fraction of updates cut at each end, per coordinate."""
    krum_f: int = Field(1, ge=0)
    """``krum``/``multikrum``: number of Byzantine clients tolerated."""
    multikrum_m: int | None = Field(None, ge=1)
    """``multikrum``: updates averaged (default: n - f)."""
    norm_bound: float = Field(1.0, gt=0)
    """``norm_bound``: each update's L2 norm is clipped to this before averaging."""

    @field_validator("name")
    @classmethod
    def _known_strategy(cls, name: str) -> str:
        return registered("strategy", name)

    @field_validator("aggregator")
    @classmethod
    def _known_aggregator(cls, name: str) -> str:
        return registered("aggregator", name)

    @model_validator(mode="after")
    def _params_fit(self) -> StrategyConfig:
        object.__setattr__(self, "params", checked_params("strategy", self.name, self.params))
        if self.aggregator != "mean":
            caps = REGISTRY.component("strategy", self.name).capabilities
            if "robust_aggregator" not in caps:
                raise ValueError(
                    f"strategy.aggregator={self.aggregator} cannot be combined with "
                    f"strategy.name={self.name} (it aggregates in its own way)"
                )
        return self
