"""Time sources for tests: they move only when the test (or a virtual sleep) moves them."""

from __future__ import annotations

import asyncio


class ManualClock:
    """Seconds as a float, like ``time.monotonic`` or ``time.time``; set or add to ``now``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class VirtualTime(ManualClock):
    """A clock plus a ``sleep`` that advances it at once and records every wait.

    Given to ``create_app(clock=..., sleep=...)``, a FloodWait of N seconds is waited out in no
    real time, and the test reads exactly which waits the code asked for in ``slept``.
    """

    def __init__(self, now: float = 1000.0) -> None:
        super().__init__(now)
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # still a suspension point, as the real sleep is
