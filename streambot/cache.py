"""The one bounded cache: a least-recently-used dict with an entry limit and an optional TTL.

Every cache in StreamBot must have a bound set in config; having one implementation means the bound,
the eviction order and the staleness rule are the same everywhere and tested once. Entries that
outlive the TTL stay readable as *stale* until evicted or swept, which is what
stale-while-revalidate needs; a cache that only wants the LRU bound leaves ``ttl`` infinite.

Not thread-safe: callers on more than one thread (the log filter) hold their own lock.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["BoundedTTLCache"]

K = TypeVar("K")
V = TypeVar("V")


class BoundedTTLCache(Generic[K, V]):
    """An LRU dict bounded by ``limit`` whose entries go stale after ``ttl`` seconds.

    ``on_evict(key, value)`` is called for each entry the ``limit`` pushes out (not for
    ``pop`` or ``sweep``), so an owner can count what the bound cost it.
    """

    def __init__(
        self,
        limit: int,
        ttl: float = math.inf,
        clock: Callable[[], float] = time.monotonic,
        *,
        on_evict: Callable[[K, V], None] | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.ttl = ttl
        self._clock = clock
        self._on_evict = on_evict
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: K) -> tuple[V, bool] | None:
        """The value and whether it is still fresh, or None; a hit makes the entry most recent."""
        item = self._data.get(key)
        if item is None:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        stored_at, value = item
        return value, self._clock() - stored_at < self.ttl

    def peek(self, key: K) -> V | None:
        """The value, fresh or stale, without touching recency or the hit counters."""
        item = self._data.get(key)
        return None if item is None else item[1]

    def touch(self, key: K) -> None:
        """Make ``key`` the most recently used entry without re-stamping it (no-op if absent)."""
        if key in self._data:
            self._data.move_to_end(key)

    def put(self, key: K, value: V) -> None:
        """Store ``value`` as fresh and most recent; evicts least recent entries past ``limit``."""
        self._data[key] = (self._clock(), value)
        self._data.move_to_end(key)
        while len(self._data) > self.limit:
            old_key, (_, old_value) = self._data.popitem(last=False)
            if self._on_evict is not None:
                self._on_evict(old_key, old_value)

    def pop(self, key: K) -> V | None:
        """Remove ``key``; returns its value, or None if it was not cached."""
        item = self._data.pop(key, None)
        return None if item is None else item[1]

    def items(self) -> Iterator[tuple[K, V]]:
        """Entries from least to most recently used (a snapshot: safe to pop while iterating)."""
        return iter([(k, v) for k, (_, v) in self._data.items()])

    def values(self) -> Iterator[V]:
        return iter([v for _, v in self._data.values()])

    def sweep(self, max_age: float | None = None) -> int:
        """Drop entries older than ``max_age`` (default: twice the TTL); returns how many."""
        limit = self._clock() - (max_age if max_age is not None else 2 * self.ttl)
        old = [k for k, (at, _) in self._data.items() if at < limit]
        for k in old:
            del self._data[k]
        return len(old)
