"""Per-user sliding-window limit on link creation, bounded in the number of users it remembers."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from streambot.cache import BoundedTTLCache


class LinkRateLimiter:
    """At most ``per_hour`` links per user in any 3600 s window; ``0`` disables the limit."""

    WINDOW = 3600.0

    def __init__(
        self, per_hour: int, *, max_users: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_hour = per_hour
        self.max_users = max_users
        self._clock = clock
        # Only the LRU bound is wanted: the window is enforced per event, not per entry.
        self._events: BoundedTTLCache[int, deque[float]] = BoundedTTLCache(max_users, clock=clock)

    def __len__(self) -> int:
        return len(self._events)

    def retry_after(self, user_id: int) -> float:
        """Seconds until ``user_id`` may create a link; 0 when allowed now (nothing recorded)."""
        if not self.per_hour:
            return 0.0
        events = self._prune(user_id)
        if events is None or len(events) < self.per_hour:
            return 0.0
        return max(0.0, events[0] + self.WINDOW - self._clock())

    def record(self, user_id: int) -> None:
        if not self.per_hour:
            return
        events = self._prune(user_id)
        if events is None:
            events = deque(maxlen=self.per_hour)
        events.append(self._clock())
        self._events.put(user_id, events)

    def _prune(self, user_id: int) -> deque[float] | None:
        events = self._events.peek(user_id)
        if events is None:
            return None
        limit = self._clock() - self.WINDOW
        while events and events[0] <= limit:
            events.popleft()
        return events


def minutes_text(seconds: float) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
