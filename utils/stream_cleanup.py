"""The tracked-stream registry: every response that is streaming bytes, shared by web server and bot.

A stream is registered by :meth:`StreamRegistry.track`, an async context manager, and removed on
every exit: completion, error, client disconnect, cancellation. The registry holds the task that
serves each stream, so a sweep can *stop* a stalled stream (cancel it), not just forget it, and
shutdown can cut the remaining streams after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from streambot.event_wait import wait_set

log = logging.getLogger(__name__)


class RegistryFull(Exception):
    """The configured maximum of concurrent streams is reached."""


class ClientStreamsFull(RegistryFull):
    """This client address already runs its maximum of concurrent streams (MAX_STREAMS_PER_CLIENT).

    Without it a few stalled readers from one address could hold every slot until the sweep.
    """


@dataclass(eq=False, slots=True)
class TrackedStream:
    """One response streaming bytes, with the facts about it that were settled at admission.

    ``owner_id`` is whose quota the bytes count against, resolved once by admission: billing
    never has to look it up again mid-stream, when a bounded cache may have dropped it.
    """

    id: int
    message_id: int
    file_name: str
    start: int
    end: int
    remote: str
    started: float
    last_progress: float
    task: asyncio.Task[Any] | None
    owner_id: int | None = None
    client: str = ""
    #: Body bytes written to the socket: what is billed (progress() adds to it).
    bytes_sent: int = 0
    #: Body bytes handed to the web server, some perhaps still buffered in this process.
    handed: int = 0
    cancelled_by_sweep: bool = False

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class StreamRegistry:
    """Live streams by id, bounded by ``limit``; time comes from an injectable clock."""

    def __init__(
        self,
        *,
        limit: int = 1000,
        per_client: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        #: Most streams one ``remote`` may run at once; 0 = no per-client cap.
        self.per_client = per_client
        # Streams per remote address; an entry exists only while that remote streams.
        self._per_remote: Counter[str] = Counter()
        self._clock = clock
        self._streams: dict[int, TrackedStream] = {}
        self._ids = itertools.count(1)
        self._idle = asyncio.Event()
        self._idle.set()
        self.completed = 0
        self.swept = 0
        #: Called with (stream, bytes) for every chunk written (bandwidth accounting listens here).
        self.listeners: list[Callable[[TrackedStream, int], None]] = []

    def __len__(self) -> int:
        return len(self._streams)

    def streams(self) -> list[TrackedStream]:
        return list(self._streams.values())

    @contextlib.asynccontextmanager
    async def track(
        self,
        *,
        message_id: int,
        file_name: str,
        start: int,
        end: int,
        remote: str,
        owner_id: int | None = None,
    ) -> AsyncIterator[TrackedStream]:
        """Register the current task's stream for the duration of the block."""
        if len(self._streams) >= self.limit:
            raise RegistryFull(f"{self.limit} streams are already running")
        if self.per_client and self._per_remote[remote] >= self.per_client:
            raise ClientStreamsFull(f"{remote} already runs {self.per_client} streams")
        now = self._clock()
        stream = TrackedStream(
            id=next(self._ids),
            message_id=message_id,
            file_name=file_name,
            start=start,
            end=end,
            remote=remote,
            started=now,
            last_progress=now,
            task=asyncio.current_task(),
            owner_id=owner_id,
        )
        self._streams[stream.id] = stream
        self._per_remote[remote] += 1
        self._idle.clear()
        try:
            yield stream
        finally:
            del self._streams[stream.id]
            self._per_remote[remote] -= 1
            if self._per_remote[remote] <= 0:
                del self._per_remote[remote]
            self.completed += 1
            if not self._streams:
                self._idle.set()

    def progress(self, stream: TrackedStream, sent: int) -> None:
        stream.bytes_sent += sent
        stream.last_progress = self._clock()
        for listener in self.listeners:
            listener(stream, sent)

    def sweep(self, stale_after: float) -> int:
        """Cancel streams without progress for ``stale_after`` seconds; returns how many.

        Cancelling the serving task runs its context managers, which unregister the stream and
        cancel its in-flight Telegram requests.
        """
        limit = self._clock() - stale_after
        stale = [s for s in self._streams.values() if s.last_progress < limit]
        for stream in stale:
            stream.cancelled_by_sweep = True
            if stream.task is not None and not stream.task.done():
                stream.task.cancel()
        if stale:
            self.swept += len(stale)
            log.info("sweep cancelled %d stalled stream(s)", len(stale))
        return len(stale)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every stream to end; True if they did."""
        return await wait_set(self._idle, timeout)

    async def cancel_all(self, timeout: float = 5.0) -> int:
        """Cut every remaining stream (shutdown) and wait for them to unwind."""
        tasks = [s.task for s in self._streams.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await self.wait_idle(timeout)
        return len(tasks)

    def snapshot(self) -> list[dict[str, Any]]:
        now = self._clock()
        return [
            {
                "id": s.id,
                "message_id": s.message_id,
                "file": s.file_name,
                "range": f"{s.start}-{s.end}",
                "client": s.client,
                "bytes_sent": s.bytes_sent,
                "age_seconds": round(now - s.started, 1),
                "idle_seconds": round(now - s.last_progress, 1),
                "remote": s.remote,
            }
            for s in self._streams.values()
        ]
