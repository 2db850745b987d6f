"""Exponential backoff: how long to wait before the next attempt, and the injectable sleep.

One rule for every retry that waits (client restarts in the supervisor, network retries in the
streamer). ``delay`` is pure, so tests check it with ``jitter=0``; the waiting is done by a
``Sleep`` the caller is given, so tests never sleep real seconds.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

__all__ = ["Backoff", "Sleep"]

#: What waiting looks like to code that must be testable without waiting (``asyncio.sleep``).
Sleep = Callable[[float], Awaitable[None]]


class Backoff:
    """Exponential backoff: ``delay(n)`` is pure (tests use ``jitter=0``); sleeping is the caller's.

    ``delay(1) == base``, then times ``factor`` per attempt, capped at ``maximum``, and spread by
    up to ``±jitter`` (a fraction) so clients that failed together do not retry in lockstep.
    """

    def __init__(
        self,
        base: float,
        *,
        factor: float = 2.0,
        maximum: float = 300.0,
        jitter: float = 0.1,
        rng: random.Random | None = None,
    ) -> None:
        if base < 0 or factor < 1 or maximum < base or not 0 <= jitter < 1:
            raise ValueError("need base >= 0, factor >= 1, maximum >= base, 0 <= jitter < 1")
        self.base = base
        self.factor = factor
        self.maximum = maximum
        self.jitter = jitter
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt`` (1-based)."""
        if attempt < 1:
            raise ValueError(f"attempt is 1-based, got {attempt}")
        value = min(self.maximum, self.base * self.factor ** (attempt - 1))
        if self.jitter:
            value *= 1 + self._rng.uniform(-self.jitter, self.jitter)
        return value
