"""Bandwidth: live byte accounting per UTC day (whole service, per file owner, per file) and quotas.

Bytes are counted in memory as they are written to clients and flushed to the store in batches:
one transaction per flush, never one write per chunk. A clean shutdown flushes everything; a crash
loses at most one flush interval. Quota checks read persisted totals through a short-lived cache plus
what is still pending, so they cost no database query on the hot path.

Several nodes may share the store: each flush *adds* its counts (an UPSERT), so totals and quotas are
read across nodes. Each batch carries a flush id recorded in the same transaction, so a flush that
failed after the database had in fact committed it (the answer was lost) is retried as the very same
batch and skipped there: nothing is lost and nothing is counted twice.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from streambot.errors import QuotaExceeded, ServiceBusy
from streambot.event_wait import wait_set
from streambot.store import Store
from streambot.units import GB

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (day "YYYY-MM-DD", scope, key)


class Billed(Protocol):
    """A stream as accounting sees it: which file, and whose (resolved at admission)."""

    @property
    def message_id(self) -> int: ...

    @property
    def owner_id(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Quotas:
    """Limits in bytes; 0 means unlimited."""

    daily: int = 0
    monthly: int = 0
    per_owner_daily: int = 0

    @classmethod
    def from_gb(cls, daily: float, monthly: float, per_owner_daily: float) -> Quotas:
        return cls(round(daily * GB), round(monthly * GB), round(per_owner_daily * GB))


def day_of(ts: float) -> date:
    return datetime.fromtimestamp(ts, UTC).date()


def month_bounds(d: date) -> tuple[date, date]:
    last = calendar.monthrange(d.year, d.month)[1]
    return d.replace(day=1), d.replace(day=last)


def seconds_until_next_day(ts: float) -> float:
    tomorrow = datetime.combine(day_of(ts) + timedelta(days=1), datetime.min.time(), UTC)
    return max(1.0, tomorrow.timestamp() - ts)


def seconds_until_next_month(ts: float) -> float:
    _, last = month_bounds(day_of(ts))
    start = datetime.combine(last + timedelta(days=1), datetime.min.time(), UTC)
    return max(1.0, start.timestamp() - ts)


class Bandwidth:
    """Counts bytes sent and enforces quotas; owns the periodic flush task."""

    def __init__(
        self,
        store: Store,
        quotas: Quotas,
        *,
        flush_seconds: float = 10.0,
        pending_limit: int = 10_000,
        cache_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.quotas = quotas
        self.flush_seconds = flush_seconds
        self.pending_limit = pending_limit
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._pending: dict[Key, int] = {}
        # A batch whose write failed, kept whole with its id until the store confirms it.
        self._unconfirmed: tuple[str, dict[Key, int]] | None = None
        self._totals: dict[tuple[str, str, str, str], tuple[float, int]] = {}
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._early_flush = asyncio.Event()
        self.flushes = 0
        self.counted = 0

    # ------------------------------------------------------------------ counting
    def on_progress(self, stream: Billed, n: int) -> None:
        """Registry listener: bill ``n`` bytes just sent by ``stream`` to its file and owner."""
        self.count(stream.message_id, stream.owner_id, n)

    def count(self, message_id: int, owner_id: int | None, n: int) -> None:
        """Count ``n`` bytes of ``message_id`` (owned by ``owner_id``) sent now."""
        if n <= 0:
            return
        day = day_of(self._clock()).isoformat()
        pending = self._pending
        for key in ((day, "global", ""), (day, "file", str(message_id))):
            pending[key] = pending.get(key, 0) + n
        if owner_id:
            key = (day, "owner", str(owner_id))
            pending[key] = pending.get(key, 0) + n
        self.counted += n
        if len(pending) >= self.pending_limit:
            self._early_flush.set()

    def _unflushed(self) -> list[dict[Key, int]]:
        return [self._pending] + ([self._unconfirmed[1]] if self._unconfirmed else [])

    @property
    def pending_bytes(self) -> int:
        return sum(
            v
            for batch in self._unflushed()
            for (_, scope, _), v in batch.items()
            if scope == "global"
        )

    async def flush(self) -> int:
        """Write pending counters, one transaction per batch; returns how many counters were written.

        A batch that failed before is retried first, unchanged and under its own id, so the
        store can tell a retry of a write that did commit from a new one.
        """
        written = 0
        async with self._flush_lock:
            for _ in range(2):  # the unconfirmed batch (if any), then what is pending now
                if self._unconfirmed is None:
                    if not self._pending:
                        break
                    self._unconfirmed = (uuid.uuid4().hex, self._pending)
                    self._pending = {}
                flush_id, batch = self._unconfirmed
                applied = await self._store.add_bandwidth(batch, flush_id=flush_id)
                self._unconfirmed = None
                if not applied:
                    log.info(
                        "bandwidth flush %s had already been written; not counted again", flush_id
                    )
                self._totals.clear()
                self.flushes += 1
                written += len(batch)
        return written

    async def run(self) -> None:
        """Flush every ``flush_seconds`` (or early when too many counters are pending)."""
        while True:
            await wait_set(self._early_flush, self.flush_seconds)
            self._early_flush.clear()
            try:
                await self.flush()
            except Exception:  # loop edge: a failed flush is retried at the next interval
                log.exception("bandwidth flush failed; will retry")

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="bandwidth-flush")

    async def stop(self) -> None:
        """Stop the periodic task and write everything still pending."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()

    # ------------------------------------------------------------------ usage and quotas
    async def _persisted(self, scope: str, key: str, first: str, last: str) -> int:
        cache_key = (scope, key, first, last)
        now = self._clock()
        cached = self._totals.get(cache_key)
        if cached is not None and now - cached[0] < self._cache_seconds:
            return cached[1]
        value = await self._store.bandwidth_total(scope, key, first, last)
        if len(self._totals) > 10_000:  # bounded: owners seen within the cache window
            self._totals.clear()
        self._totals[cache_key] = (now, value)
        return value

    def _pending_total(self, scope: str, key: str, first: str, last: str) -> int:
        return sum(
            n
            for batch in self._unflushed()
            for (d, s, k), n in batch.items()
            if s == scope and k == key and first <= d <= last
        )

    async def usage(self, scope: str, key: str, *, period: str = "day") -> int:
        """Bytes sent in the current UTC day or month for (scope, key), pending included."""
        today = day_of(self._clock())
        first, last = (today, today) if period == "day" else month_bounds(today)
        f, la = first.isoformat(), last.isoformat()
        return await self._persisted(scope, key, f, la) + self._pending_total(scope, key, f, la)

    async def check(self, owner_id: int | None) -> None:
        """Refuse a new download over a limit: ServiceBusy (the service's), QuotaExceeded (owner's)."""
        q, now = self.quotas, self._clock()
        if q.daily and await self.usage("global", "") >= q.daily:
            raise ServiceBusy(
                "The daily bandwidth limit of this service is reached.", seconds_until_next_day(now)
            )
        if q.monthly and await self.usage("global", "", period="month") >= q.monthly:
            raise ServiceBusy(
                "The monthly bandwidth limit of this service is reached.",
                seconds_until_next_month(now),
            )
        if (
            owner_id
            and q.per_owner_daily
            and await self.usage("owner", str(owner_id)) >= q.per_owner_daily
        ):
            raise QuotaExceeded(
                "The daily download limit for this file's owner is reached.",
                seconds_until_next_day(now),
            )

    async def cleanup(self, keep_days: int, *, batch_size: int = 1000) -> int:
        """Delete records older than ``keep_days`` (the daily job); returns rows removed."""
        cutoff = (day_of(self._clock()) - timedelta(days=keep_days)).isoformat()
        removed = await self._store.delete_bandwidth_before(cutoff, batch_size=batch_size)
        log.info("bandwidth cleanup removed %d record(s) before %s", removed, cutoff)
        return removed
