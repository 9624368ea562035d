"""A named registry of factories that reports an unknown name as a config error."""

from __future__ import annotations

from typing import Generic, TypeVar

from fedloom.core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Factories by name for the config key ``key``; packages add theirs on import."""

    def __init__(self, key: str, initial: dict[str, T] | None = None) -> None:
        self.key = key
        self._items: dict[str, T] = dict(initial or {})

    def register(self, name: str, item: T) -> None:
        self._items[name] = item

    def names(self) -> list[str]:
        return sorted(self._items)

    def get(self, name: str) -> T:
        item = self._items.get(name)
        if item is None:
            raise ConfigError(
                [
                    f"{self.key}: {name!r} is not registered (import fedloom.features to load "
                    f"every built-in one); registered: {self.names()}"
                ]
            )
        return item
