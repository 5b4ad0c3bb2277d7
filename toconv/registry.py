"""A name → object registry, the one pattern behind compressor families, designs and presets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one ``kind`` (used in messages), registered once each.

    ``attribute``: a registered class gets its name as this class attribute (e.g. ``family``).
    """

    def __init__(self, kind: str, attribute: str | None = None) -> None:
        self.kind, self.attribute = kind, attribute
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def decorator(self, name: str) -> Callable[[T], T]:
        """``@registry.decorator("name")``: register the decorated object."""

        def wrap(entry: T) -> T:
            if self.attribute is not None:
                setattr(entry, self.attribute, name)
            return self.add(name, entry)

        return wrap

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; expected one of {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
