"""The base of the distillation strategies: one model per architecture, bound at assembly."""

from __future__ import annotations

from fedloom.distill.setup import Federation
from fedloom.server.config import StrategyConfig
from fedloom.server.strategy import Strategy, sgd


class DistillStrategy(Strategy):
    """A strategy over clients of several architectures. ``distill_feature`` binds it to
    its ``Federation`` before any other feature sees the parts."""

    def __init__(self, name: str, config: StrategyConfig) -> None:
        super().__init__(name, sgd(config.server_lr))
        self._federation: Federation | None = None

    def bind(self, federation: Federation) -> None:
        self._federation = federation

    @property
    def fed(self) -> Federation:
        if self._federation is None:
            raise RuntimeError(f"strategy {self.name} was not bound to its federation")
        return self._federation

    def client_view(self, client_id: str) -> str:
        return self.fed.arch_of(client_id)
