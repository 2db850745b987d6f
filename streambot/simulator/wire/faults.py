"""Wire faults: which connection misbehaves, when, and how often.

A fault is considered each time the server is about to answer a request (an ``rpc_result``) on a
connection whose bot, DC and kind (media or main) match: ``after`` such answers go through first, then the fault fires
with ``probability`` on each further one, at most ``count`` times (``None``: no limit). Handshake
packets, pongs and acks never trigger a fault, so ``after`` counts exactly what a test sends.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal, get_args

WireFaultKind = Literal["rst", "blackhole", "stall", "drip"]
WIRE_FAULT_KINDS: tuple[str, ...] = get_args(WireFaultKind)
#: How long a stall lasts when the fault names no duration.
DEFAULT_STALL_SECONDS = 5.0


class WireFaultError(ValueError):
    """A wire fault description that cannot be applied (unknown kind, negative count...)."""


@dataclass(slots=True)
class WireFault:
    kind: WireFaultKind
    bot: int | None = None
    dc: int | None = None
    after: int = 0
    count: int | None = 1
    seconds: float | None = None
    probability: float = 1.0
    media: bool | None = None  # None: main and media connections alike
    seen: int = field(default=0)
    fired: int = field(default=0)

    @classmethod
    def make(
        cls,
        kind: str,
        *,
        bot: int | None = None,
        dc: int | None = None,
        after: int = 0,
        count: int | None = 1,
        seconds: float | None = None,
        probability: float = 1.0,
        media: bool | None = None,
    ) -> WireFault:
        if kind not in WIRE_FAULT_KINDS:
            raise WireFaultError(f"kind must be one of {', '.join(WIRE_FAULT_KINDS)}, not {kind!r}")
        if after < 0 or (count is not None and count < 1):
            raise WireFaultError("after must be >= 0 and count >= 1")
        if seconds is not None and seconds < 0:
            raise WireFaultError("seconds must be >= 0")
        if not 0.0 <= probability <= 1.0:
            raise WireFaultError("probability must be within [0, 1]")
        return cls(kind, bot, dc, after, count, seconds, probability, media)  # type: ignore[arg-type]

    @property
    def spent(self) -> bool:
        return self.count is not None and self.fired >= self.count

    def matches(self, bot: int | None, dc: int, media: bool) -> bool:
        return (
            (self.bot is None or self.bot == bot)
            and (self.dc is None or self.dc == dc)
            and (self.media is None or self.media == media)
        )


def pick(
    faults: list[WireFault], bot: int | None, dc: int, media: bool, rng: random.Random
) -> WireFault | None:
    """The fault that fires on this answer, if any (updates the faults' counters)."""
    for fault in faults:
        if fault.spent or not fault.matches(bot, dc, media):
            continue
        fault.seen += 1
        if fault.seen <= fault.after:
            continue
        if fault.probability < 1.0 and rng.random() >= fault.probability:
            continue
        fault.fired += 1
        return fault
    return None
