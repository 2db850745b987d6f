"""The streamer: bytes of a stored file's range, fetched with several ``upload.GetFile`` in flight.

One sequential request per block caps a stream at one block per round trip to Telegram. Keeping
``prefetch`` aligned requests in flight on the client's media session removes that cap, while the
bytes are still yielded strictly in order. Memory is bounded twice: per stream by its window, and
across all streams by :class:`InflightBudget`, which shrinks windows under pressure (a stream always
keeps at least one block, and waits for budget rather than failing).

Faults are handled where they happen, resuming at the same byte: an expired file reference re-fetches
the message; a long FloodWait moves the stream to another client (or waits for one); network errors
get bounded retries with exponential backoff. When nothing works the stream raises
:class:`~streambot.errors.StreamAborted` and the route cuts the connection: a body is never ended
short as if it were complete.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from pyrogram import raw
from pyrogram.errors import (
    FileMigrate,
    FileReferenceExpired,
    FileReferenceInvalid,
    FloodPremiumWait,
    FloodWait,
    RPCError,
)

from streambot.blocks import MIB, Block, ShortRead, plan_blocks, trim
from streambot.catalog import Catalog, FileInfo, FileLocation
from streambot.errors import StreamAborted
from streambot.fleet import Fleet, FleetClient, NoClientAvailable

log = logging.getLogger(__name__)


class InflightBudget:
    """A byte budget shared by every stream's in-flight and buffered blocks.

    ``acquire`` is first-come first-served, so a stream waiting for its only block is not starved by
    streams that already have several. ``window`` gives each active stream a fair share.
    """

    def __init__(self, total_bytes: int) -> None:
        if total_bytes < MIB:
            raise ValueError("the stream memory budget must be at least 1 MiB")
        self.total = total_bytes
        self.used = 0
        self.active_streams = 0
        self.peak = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    def window(self, prefetch: int, block: int) -> int:
        """Blocks a stream may hold: its prefetch, shrunk to a fair share, never below one."""
        share = self.total // (block * max(1, self.active_streams))
        return max(1, min(prefetch, share))

    def try_acquire(self, n: int) -> bool:
        if self._waiters or self.used + n > self.total:
            return False
        self._take(n)
        return True

    async def acquire(self, n: int) -> None:
        if self.try_acquire(n):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, fut)
        self._waiters.append(entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(n)  # granted just as we were cancelled: give it back
            else:
                self._waiters.remove(entry)
                self._wake()
            raise

    def release(self, n: int) -> None:
        self.used -= n
        self._wake()

    def _take(self, n: int) -> None:
        self.used += n
        self.peak = max(self.peak, self.used)

    def _wake(self) -> None:
        while self._waiters:
            n, fut = self._waiters[0]
            if fut.done():
                self._waiters.popleft()
                continue
            # A block larger than the whole budget still proceeds once nothing else is held.
            if self.used + n > self.total and self.used > 0:
                return
            self._waiters.popleft()
            self._take(n)
            fut.set_result(None)


@dataclass(frozen=True, slots=True)
class StreamerConfig:
    prefetch: int = 4
    block_size: int = MIB
    retries: int = 3  # network errors per block before trying another client
    retry_base_delay: float = 0.25  # doubles per attempt
    flood_sleep_threshold: float = 5.0  # shorter FloodWaits are slept through in place
    max_wait: float = 60.0  # longest a stream waits for any client before it is aborted
    request_timeout: float = 30.0
    reference_refreshes: int = 3


@dataclass(slots=True)
class StreamProgress:
    """Live facts about one stream, read by the registry and /memory."""

    client: str = ""
    bytes_yielded: int = 0
    switches: int = 0
    requests: int = 0


@dataclass(slots=True)
class _Attempt:
    """The client a stream currently holds (leased) and reads from; updated in place on failover."""

    fc: FleetClient
    location: FileLocation | None = None
    refreshes: int = 0


class Streamer:
    """Produces the bytes of ``[start, end]`` of a stored file, in order, with prefetch."""

    def __init__(
        self,
        fleet: Fleet,
        catalog: Catalog,
        budget: InflightBudget,
        config: StreamerConfig,
        *,
        on_request: Callable[[str, str], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self._fleet = fleet
        self._catalog = catalog
        self._budget = budget
        self.config = config
        self._on_request = on_request or (lambda method, client: None)
        self._on_error = on_error or (lambda kind: None)

    async def stream(
        self, info: FileInfo, start: int, end: int, progress: StreamProgress | None = None
    ) -> AsyncIterator[bytes | memoryview]:
        """Yield the bytes of ``[start, end]`` (inclusive) of ``info``; raise StreamAborted on failure."""
        progress = progress or StreamProgress()
        cfg = self.config
        pos = start
        budget = self._budget
        budget.active_streams += 1
        pending: collections.deque[tuple[Block, asyncio.Task[bytes]]] = collections.deque()
        try:
            attempt = _Attempt(await self._acquire(info, exclude=()))
        except BaseException:
            budget.active_streams -= 1
            raise
        try:
            attempt.location = await self._location(attempt.fc, info.message_id)
            progress.client = attempt.fc.name
            while pos <= end:
                plan = plan_blocks(pos, end, info.size, max_block=cfg.block_size)
                next_index = 0
                failure: BaseException | None = None
                while next_index < len(plan) or pending:
                    window = budget.window(cfg.prefetch, cfg.block_size)
                    while next_index < len(plan) and len(pending) < window:
                        block = plan[next_index]
                        if pending:
                            if not budget.try_acquire(block.limit):
                                break
                        else:
                            await budget.acquire(block.limit)
                        task = asyncio.create_task(self._fetch(attempt, block))
                        pending.append((block, task))
                        next_index += 1
                    block, task = pending[0]
                    try:
                        data = await task
                    except (RPCError, OSError, TimeoutError, ShortRead) as exc:
                        failure = exc
                        break
                    pending.popleft()
                    try:
                        chunk = trim(block, data)
                    except ShortRead as exc:
                        budget.release(block.limit)
                        failure = exc
                        break
                    progress.requests += 1
                    try:
                        yield chunk
                    finally:
                        budget.release(block.limit)
                    pos += len(chunk)
                    progress.bytes_yielded += len(chunk)
                if failure is None:
                    break
                await self._drain(pending)
                await self._recover(info, attempt, failure, progress)
        finally:
            await self._drain(pending)
            budget.active_streams -= 1
            self._fleet.release(attempt.fc)

    async def _drain(self, pending: collections.deque[tuple[Block, asyncio.Task[bytes]]]) -> None:
        """Cancel in-flight requests (a viewer left, or we fail over) and return their budget."""
        while pending:
            block, task = pending.popleft()
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, RPCError, OSError, TimeoutError, ShortRead):
                pass
            finally:
                self._budget.release(block.limit)

    async def _acquire(self, info: FileInfo, exclude: tuple[FleetClient, ...]) -> FleetClient:
        """A client for this stream, waiting (bounded) while every client is cooling down."""
        waited = 0.0
        while True:
            try:
                return self._fleet.acquire(dc_id=info.dc_id, exclude=exclude)
            except NoClientAvailable as exc:
                if exclude:
                    exclude = ()  # better the same client after its wait than none at all
                    continue
                delay = exc.retry_after if exc.retry_after is not None else 1.0
                delay = max(0.05, delay)
                if waited + delay > self.config.max_wait:
                    self._on_error("no_client")
                    raise StreamAborted("no Telegram client can serve this file now") from exc
                await asyncio.sleep(delay)
                waited += delay

    async def _location(
        self, fc: FleetClient, message_id: int, refresh: bool = False
    ) -> FileLocation:
        try:
            return await self._catalog.location(fc, message_id, refresh=refresh)
        except RPCError as exc:
            raise StreamAborted(f"cannot resolve the file via {fc.name}: {exc.ID}") from exc

    async def _fetch(self, attempt: _Attempt, block: Block) -> bytes:
        """One GetFile, with bounded network retries; other errors go to the stream for recovery."""
        cfg = self.config
        fc, location = attempt.fc, attempt.location
        assert location is not None
        delay = cfg.retry_base_delay
        for try_number in range(cfg.retries + 1):
            session = await fc.client.get_session(location.dc_id, is_media=True)
            self._on_request("upload.GetFile", fc.name)
            try:
                result = await session.invoke(
                    raw.functions.upload.GetFile(
                        location=location.location, offset=block.offset, limit=block.limit
                    ),
                    retries=1,
                    timeout=cfg.request_timeout,
                    sleep_threshold=cfg.flood_sleep_threshold,
                    retry_delay=0,
                )
            except (OSError, TimeoutError):
                # Includes pyrogram's own "Failed to invoke" TimeoutError after a dropped answer.
                self._on_error("network")
                if try_number == cfg.retries:
                    raise
                await asyncio.sleep(delay)
                delay *= 2
                continue
            if not isinstance(result, raw.types.upload.File):
                raise StreamAborted(f"unexpected GetFile answer {type(result).__name__}")
            return result.bytes
        raise AssertionError("unreachable")

    async def _recover(
        self, info: FileInfo, attempt: _Attempt, exc: BaseException, progress: StreamProgress
    ) -> None:
        """Decide how to continue after ``exc``: update ``attempt`` in place, or raise StreamAborted."""
        fc = attempt.fc
        if isinstance(exc, FileReferenceExpired | FileReferenceInvalid):
            self._on_error("file_reference_expired")
            if attempt.refreshes >= self.config.reference_refreshes:
                raise StreamAborted("the file reference keeps expiring") from exc
            attempt.refreshes += 1
            attempt.location = await self._location(fc, info.message_id, refresh=True)
            return
        if isinstance(exc, FileMigrate):
            self._on_error("file_migrate")
            dc = getattr(exc, "dc_id", None) or exc.value
            assert attempt.location is not None
            if not isinstance(dc, int) or dc == attempt.location.dc_id:
                raise StreamAborted("Telegram keeps redirecting the file") from exc
            attempt.location = FileLocation(attempt.location.location, dc)
            return
        if isinstance(exc, FloodWait | FloodPremiumWait):
            self._on_error("flood_wait")
            seconds = float(exc.value or 0)
            self._fleet.cool_down(fc, seconds)
            log.warning("%s in FloodWait for %ss; moving the stream", fc.name, seconds)
        elif isinstance(exc, OSError | TimeoutError):
            log.warning("%s: network errors persist (%s); trying another client", fc.name, exc)
        elif isinstance(exc, ShortRead):
            self._on_error("short_read")
            raise StreamAborted("Telegram returned fewer bytes than the file holds") from exc
        else:
            self._on_error("telegram")
            raise StreamAborted(f"Telegram error {getattr(exc, 'ID', exc)}") from exc
        new_fc = await self._acquire(info, exclude=(fc,))
        self._fleet.release(fc)
        attempt.fc, attempt.location, attempt.refreshes = new_fc, None, 0
        if new_fc is not fc:
            progress.switches += 1
        progress.client = new_fc.name
        attempt.location = await self._location(new_fc, info.message_id)
