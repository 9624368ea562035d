"""The base of the distillation strategies: one model per architecture, bound at assembly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fedloom.distill.setup import Federation
from fedloom.server.config import StrategyConfig
from fedloom.server.strategy import Strategy, sgd

BEFORE = {"teacher": "mean", "teacher_std": None, "guard": "classes"}
"""The settings of a checkpoint saved before it recorded them (their defaults then)."""


def _setting(value: Any) -> str:
    """``value`` as a ``--set`` override writes it (None is ``null``)."""
    return "null" if value is None else str(value)


class DistillStrategy(Strategy):
    """A strategy over clients of several architectures. ``distill_feature`` binds it to
    its ``Federation`` before any other feature sees the parts."""

    recorded: ClassVar[tuple[str, ...]] = ("teacher", "teacher_std")
    """The ``distill`` keys a checkpoint records and a resumed run must keep."""

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

    def settings(self) -> dict[str, Any]:
        """The ``distill`` settings named in ``recorded``, to save with a checkpoint."""
        return {key: getattr(self.fed.config, key) for key in self.recorded}

    def check_settings(self, rest: Mapping[str, Any]) -> None:
        """ValueError unless the checkpoint's ``rest`` was run with this run's recorded
        settings: a resumed run must not change its teacher halfway."""
        for key, now in self.settings().items():
            then = rest.get(key, BEFORE[key])
            if then != now:
                then, now = (_setting(v) for v in (then, now))
                raise ValueError(
                    f"the checkpoint was run with distill.{key}={then}, this run has {now}: "
                    f"resume with distill.{key}={then}"
                )

    def client_view(self, client_id: str) -> str:
        return self.fed.arch_of(client_id)
