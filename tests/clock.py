"""A time source for tests: it moves only when the test moves it, so no test sleeps for time."""

from __future__ import annotations


class ManualClock:
    """Seconds as a float, like ``time.monotonic`` or ``time.time``; set or add to ``now``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
