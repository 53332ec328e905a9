"""Micro-batching: up to ``max_size`` instances or ``max_wait`` seconds, whichever first.

Pure: the caller supplies the clock reading, so it is tested without sleeping.
Items with different ``key`` (instance shapes, for signatures with variable inner
dimensions) never share a batch.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    def __init__(self, max_size: int, max_wait_s: float) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self._items: list[T] = []
        self._key: Hashable = None
        self._opened_at = 0.0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T, key: Hashable, now: float) -> list[list[T]]:
        """Add an item; return the batches this closed (full, or cut by a key change)."""
        closed: list[list[T]] = []
        if self._items and key != self._key:
            closed.append(self._take())
        if not self._items:
            self._key = key
            self._opened_at = now
        self._items.append(item)
        if len(self._items) >= self.max_size:
            closed.append(self._take())
        return closed

    def deadline(self) -> float | None:
        """When the open batch must go, or None if there is none."""
        return self._opened_at + self.max_wait_s if self._items else None

    def take_due(self, now: float) -> list[T] | None:
        """The open batch if its wait is over."""
        deadline = self.deadline()
        if deadline is not None and now >= deadline:
            return self._take()
        return None

    def take_all(self) -> list[T] | None:
        """The open batch whatever its age (shutdown, rebalance)."""
        return self._take() if self._items else None

    def _take(self) -> list[T]:
        items, self._items = self._items, []
        return items
