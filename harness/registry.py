"""One generic registry for every plugin kind: methods, datasets, models, metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from harness.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object. Duplicates raise; unknown names raise with a 'did you mean'."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: `@REGISTRY.register("name")` (defaults to the object's `name` or `__name__`)."""

        def decorate(obj: T) -> T:
            key = name or getattr(obj, "name", None) or obj.__name__
            self.add(key, obj)
            return obj

        return decorate

    def add(self, name: str, obj: T) -> None:
        if name in self._entries and self._entries[name] is not obj:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._entries) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
