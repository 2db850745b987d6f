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
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pyrogram import raw
from pyrogram.errors import (
    FileMigrate,
    FileReferenceExpired,
    FileReferenceInvalid,
    FloodPremiumWait,
    FloodWait,
    InternalServerError,
    RPCError,
    ServiceUnavailable,
    Unauthorized,
)

from streambot.backoff import Backoff, Sleep
from streambot.blocks import Block, ShortRead, plan_blocks, trim
from streambot.budget import InflightBudget
from streambot.catalog import Catalog, FileInfo, FileLocation
from streambot.errors import FileNotFound, StreamAborted
from streambot.fleet import Fleet, FleetClient, NoClientAvailable
from streambot.media import ConnectionLost, MediaPool, MediaPools, MediaUnavailable
from streambot.units import MIB

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StreamerConfig:
    prefetch: int = 8
    # The window starts here and doubles per block the viewer has taken: a player that reads a
    # few KiB and hangs up -- probing for the index, seeking -- wastes a request or two instead
    # of a full window, and a viewer who stays reaches ``prefetch`` within a few round trips.
    # A block counts once its bytes left the socket and a later block was handed over (so at
    # least one round trip passed): a write only fills kernel buffers, which on loopback and on
    # fast links swallow a whole block at once whether the viewer reads on or has hung up.
    # (Growing by one per block, as TCP does, ramps slower for the same probe cost; see
    # bench/README.md.)
    prefetch_start: int = 1
    block_size: int = MIB
    retries: int = 3  # network errors per block before trying another client
    retry_base_delay: float = 0.25  # doubles per attempt
    flood_sleep_threshold: float = 5.0  # shorter FloodWaits are slept through in place
    max_wait: float = 60.0  # longest a stream waits for any client before it is aborted
    # A client that failed while a stream was being prepared (and was not in FloodWait, which
    # says how long itself) stays out of selection this long.
    prepare_cooldown: float = 10.0
    # Recoveries in a row without a single byte of progress before the stream is given up:
    # bounds loops such as a reference that keeps expiring or every client's network failing.
    max_recoveries: int = 3


class UnexpectedAnswer(ConnectionError):
    """GetFile answered with something other than bytes: asked again like a network failure."""


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
    pool: MediaPool | None = None


_Pending = collections.deque[tuple[Block, "asyncio.Task[bytes]"]]


class _Blocks:
    """The plan of ``[start, end]``, made lazily in segments of ``_SEGMENT_BLOCKS`` windows.

    Planning a whole range up front costs a Block per request before the first byte: 131072 of
    them for a 512 MiB range in 4 KiB blocks, which blocks the event loop for a second. Segment
    ends fall on multiples of the block size (a request window), so the segments' plans joined
    are exactly :func:`plan_blocks` of the whole range. Shed blocks are put back at the front.
    """

    def __init__(self, start: int, end: int, size: int, block_size: int) -> None:
        self._pending: Iterator[Block] = self._segments(start, end, size, block_size)
        self._front: collections.deque[Block] = collections.deque()

    @staticmethod
    def _segments(start: int, end: int, size: int, block_size: int) -> Iterator[Block]:
        pos = start
        while pos <= end:
            last = min(end, (pos // block_size + _SEGMENT_BLOCKS) * block_size - 1)
            yield from plan_blocks(pos, last, size, max_block=block_size)
            pos = last + 1

    def peek(self) -> Block | None:
        if not self._front:
            block = next(self._pending, None)
            if block is None:
                return None
            self._front.append(block)
        return self._front[0]

    def take(self) -> Block:
        return self._front.popleft()

    def put_back(self, block: Block) -> None:
        self._front.appendleft(block)


_SEGMENT_BLOCKS = 64


@dataclass(slots=True)
class _Window:
    """A stream's requests in flight and what comes next, shared with its ``shed`` callback."""

    blocks: _Blocks
    pending: _Pending = field(default_factory=collections.deque)
    at_yield: bool = False  # a chunk is with the consumer (and still counted in the budget)


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a finished request's exception as seen: drained requests are never awaited again."""
    if not task.cancelled():
        task.exception()


def _wait_seconds(exc: FloodWait | FloodPremiumWait) -> float:
    """The wait Telegram asked for; pyrogram parses the number out of the error into ``value``."""
    return float(exc.value) if isinstance(exc.value, int) else 0.0


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class Streamer:
    """Produces the bytes of ``[start, end]`` of a stored file, in order, with prefetch."""

    def __init__(
        self,
        fleet: Fleet,
        catalog: Catalog,
        budget: InflightBudget,
        config: StreamerConfig,
        media: MediaPools,
        *,
        on_request: Callable[[str, str], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """``sleep`` does every wait (FloodWait in place, network retries, no client free), so
        tests inject one that records the waits instead of spending them."""
        self._fleet = fleet
        self._catalog = catalog
        self._budget = budget
        self.config = config
        self._on_request = on_request or (lambda method, client: None)
        self._on_error = on_error or (lambda kind: None)
        self._sleep = sleep
        # Network retries of one block: base, 2x base, ... (no jitter: one stream's retries
        # are not synchronised with anyone's), never longer than a stream may wait at all.
        self._retry_backoff = Backoff(
            config.retry_base_delay,
            maximum=max(config.retry_base_delay, config.max_wait),
            jitter=0.0,
        )
        self._media = media

    async def stream(
        self,
        info: FileInfo,
        start: int,
        end: int,
        progress: StreamProgress | None = None,
        *,
        taken: Callable[[], int] | None = None,
    ) -> AsyncIterator[bytes | memoryview]:
        """Yield the bytes of ``[start, end]`` (inclusive) of ``info``; raise StreamAborted on failure.

        ``taken`` says how many of the yielded bytes the viewer has really taken (written out of
        the socket); the window grows only with those. Without it every yielded byte counts.

        Never raises a Telegram or network error: anything that stops the stream becomes
        :class:`StreamAborted`, so callers cannot mistake it for their own client going away.
        """
        progress = progress or StreamProgress()
        cfg = self.config
        budget = self._budget
        # Counted in before anything can fail, counted out in the ``finally`` below.
        block_size = budget.open_stream(cfg.block_size)
        # A crowded stream's smaller blocks keep the same window in bytes.
        prefetch = max(1, cfg.prefetch * cfg.block_size // block_size)
        pos = start
        ramp = max(1, min(cfg.prefetch_start, prefetch))
        # Stream offsets (bytes yielded so far) at which each handed-over chunk ends, while the
        # window is still growing; each one the viewer has taken doubles the window.
        handed: collections.deque[int] = collections.deque()
        yielded = 0
        w = _Window(_Blocks(start, end, info.size, block_size))
        attempt: _Attempt | None = None

        def shed() -> None:
            # Runs in another task while this stream is suspended: at ``yield`` (its viewer is
            # slow; every prefetched block may go) or awaiting its head block (which stays).
            keep = 0 if w.at_yield else 1
            held = len(w.pending) + w.at_yield
            window = budget.window(prefetch, block_size)
            while held > window and len(w.pending) > keep:
                block, task = w.pending.pop()
                task.cancel()
                w.blocks.put_back(block)
                held -= 1
                budget.shed_blocks += 1
                budget.release(block.limit)

        budget.register(shed)
        try:
            attempt = _Attempt(await self._acquire(info, exclude=()))
            progress.client = attempt.fc.name
            await self._prepare_anywhere(info, attempt, progress)
            stuck = 0  # recoveries since the last byte went out
            while True:
                failure: Exception | None = None
                while w.pending or w.blocks.peek() is not None:
                    # The latest chunk never counts at its own refill: it has only just been
                    # written. Taken ones grow the window (to ``prefetch`` at most).
                    if len(handed) > 1:
                        done = taken() if taken is not None else yielded
                        while len(handed) > 1 and handed[0] <= done:
                            handed.popleft()
                            ramp = min(prefetch, ramp * 2)
                    # The window is re-read per block so streams shrink as others start.
                    window = min(ramp, budget.window(prefetch, block_size))
                    while len(w.pending) < window and (block := w.blocks.peek()) is not None:
                        if w.pending:
                            if not budget.try_acquire(block.limit):
                                break  # under pressure: keep what we hold, never wait holding it
                        else:
                            await budget.acquire(block.limit)
                        w.blocks.take()
                        task = asyncio.create_task(self._fetch(attempt, block))
                        task.add_done_callback(_retrieve)
                        w.pending.append((block, task))
                    block, task = w.pending[0]
                    try:
                        # Shielded: cancelling this stream must not go through the request.
                        # On Python 3.11, pyrogram's invoke (asyncio.wait_for) swallows a cancel
                        # that lands as its inner wait completes; awaiting the task directly
                        # would then lose this stream's cancellation (sweep, shutdown) and keep
                        # it running. The drain below cancels the request itself.
                        chunk = trim(block, await asyncio.shield(task))
                    except (RPCError, OSError, ShortRead) as exc:  # OSError covers TimeoutError
                        failure = exc
                        break
                    except asyncio.CancelledError:
                        if _cancelling():
                            raise
                        # The request was cancelled under us (its session stopped): a network fault.
                        failure = ConnectionAbortedError("the GetFile request was cancelled")
                        break
                    w.pending.popleft()
                    progress.requests += 1
                    w.at_yield = True
                    try:
                        yield chunk
                    finally:
                        w.at_yield = False
                        budget.release(block.limit)
                    pos += len(chunk)
                    progress.bytes_yielded += len(chunk)
                    yielded += len(chunk)
                    if ramp < prefetch and len(handed) <= prefetch:
                        handed.append(yielded)
                    stuck = 0
                if failure is None:
                    break
                await self._drain(w.pending)
                w.blocks = _Blocks(pos, end, info.size, block_size)  # resume at the same byte
                stuck += 1
                if stuck > cfg.max_recoveries:
                    self._on_error("gave_up")
                    raise StreamAborted(
                        f"no progress after {cfg.max_recoveries} recoveries: {failure!r}"
                    ) from failure
                await self._recover(info, attempt, failure, progress)
        finally:
            budget.unregister(shed)
            try:
                await self._drain(w.pending)
            finally:
                # Even when cancelled again while draining (a viewer's disconnect cancels the
                # handler that is already cleaning up), the counts must come back down.
                budget.close_stream(block_size)
                if attempt is not None:
                    self._fleet.release(attempt.fc)

    async def _drain(self, pending: _Pending) -> None:
        """Cancel in-flight requests (a viewer left, or we fail over) and return their budget."""
        if not pending:
            return
        entries = list(pending)
        pending.clear()
        for _block, task in entries:
            task.cancel()
        try:
            # wait() never raises the requests' own errors (``_retrieve`` marks them seen), only
            # our own cancellation, which must propagate.
            await asyncio.wait([task for _block, task in entries])
        finally:
            for block, _task in entries:
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
                log.info("no client free for message %s; waiting %.1fs", info.message_id, delay)
                await self._sleep(delay)
                waited += delay

    async def _prepare(self, attempt: _Attempt, message_id: int, *, refresh: bool = False) -> None:
        """Resolve where ``attempt.fc`` reads the file and make sure a media connection is open.

        Raises what Telegram raised (RPCError, OSError) and FileNotFound.
        """
        fc = attempt.fc
        attempt.location = await self._catalog.location(fc, message_id, refresh=refresh)
        attempt.pool = self._media.pool(fc, attempt.location.dc_id)
        await attempt.pool.ready()

    async def _prepare_anywhere(
        self, info: FileInfo, attempt: _Attempt, progress: StreamProgress, *, refresh: bool = False
    ) -> None:
        """:meth:`_prepare` on ``attempt.fc``, or on the next healthy client when that fails.

        A client that fails here (GetMessages or export FloodWait, a media connection that will
        not open, ...) is cooled down, for the FloodWait's length or ``prepare_cooldown``, so new
        streams avoid it too. Only when no client is left does the stream end (the route answers
        502 with Retry-After when nothing was sent yet).
        """
        tried: list[FleetClient] = []
        while True:
            try:
                await self._prepare(attempt, info.message_id, refresh=refresh)
                return
            except FileNotFound as exc:
                raise StreamAborted(f"message {info.message_id} is gone: {exc}") from exc
            except (RPCError, OSError) as exc:
                failure: Exception = exc
            fc = attempt.fc
            self._on_error("prepare_failed")
            tried.append(fc)
            others = [c for c in self._fleet.available() if c not in tried]
            if isinstance(failure, FloodWait | FloodPremiumWait) or others:
                # Telegram said how long (FloodWait), or other clients can take the load: keep
                # new streams off this one for a while. A lone client is not benched for a
                # blip, or the next viewer would wait out a cooldown that helps nobody.
                seconds = (
                    _wait_seconds(failure)
                    if isinstance(failure, FloodWait | FloodPremiumWait)
                    else self.config.prepare_cooldown
                )
                self._fleet.cool_down(fc, seconds)
                log.warning(
                    "%s cannot serve message %s (%r); cooled down %.0fs",
                    fc.name,
                    info.message_id,
                    failure,
                    seconds,
                )
            try:
                new_fc = self._fleet.acquire(dc_id=info.dc_id, exclude=tried)
            except NoClientAvailable:
                self._on_error("no_client")
                raise StreamAborted(
                    f"no Telegram client can serve message {info.message_id}: {failure!r}"
                ) from failure
            self._fleet.release(fc)
            attempt.fc, attempt.location, attempt.pool = new_fc, None, None
            progress.switches += 1
            progress.client = new_fc.name
            refresh = False

    async def _fetch(self, attempt: _Attempt, block: Block) -> bytes:
        """One GetFile, with bounded network retries and short FloodWaits slept in place.

        Other errors (and long FloodWaits) go to the stream, which recovers or gives up.
        """
        cfg = self.config
        fc, location, pool = attempt.fc, attempt.location, attempt.pool
        assert location is not None
        assert pool is not None
        request = raw.functions.upload.GetFile(
            location=location.location, offset=block.offset, limit=block.limit
        )
        failures = 0
        while True:
            self._on_request("upload.GetFile", fc.name)
            try:
                # The pool sends it on one of the bot's media connections for this DC, with the
                # bytes awaited per connection bounded and a dead connection failing it at once.
                result = await pool.fetch(request, block.limit)
                if not isinstance(result, raw.types.upload.File):
                    # FileCdnRedirect (StreamBot never asks for CDN files) or another oddity:
                    # ask again, like a network error; never abort on it.
                    raise UnexpectedAnswer(f"unexpected GetFile answer {type(result).__name__}")
            except (FloodWait, FloodPremiumWait) as exc:
                seconds = _wait_seconds(exc)
                failures += 1
                if seconds > cfg.flood_sleep_threshold or failures > cfg.retries:
                    raise
                self._on_error("flood_wait_short")
                log.info("%s: FloodWait %ss on GetFile; waiting in place", fc.name, seconds)
                await self._sleep(seconds)
                continue
            except (ConnectionLost, MediaUnavailable):
                # The connection died under this request: the stream moves on at once (another
                # client if there is one) rather than retrying into the same trouble.
                self._on_error("connection_lost")
                raise
            except (OSError, InternalServerError, ServiceUnavailable):
                # A request timed out on a live connection, -503 "Timeout", a 500: retry, bounded.
                self._on_error("network")
                failures += 1
                if failures > cfg.retries:
                    raise
                await self._sleep(self._retry_backoff.delay(failures))
                continue
            return result.bytes

    async def _recover(
        self, info: FileInfo, attempt: _Attempt, exc: Exception, progress: StreamProgress
    ) -> None:
        """Decide how to continue after ``exc``: update ``attempt`` in place, or raise StreamAborted."""
        fc = attempt.fc
        if isinstance(exc, FileReferenceExpired | FileReferenceInvalid):
            self._on_error("file_reference_expired")
            await self._prepare_anywhere(info, attempt, progress, refresh=True)
            return
        if isinstance(exc, Unauthorized):
            # The pool dropped its sessions and key (AUTH_KEY_UNREGISTERED); open them again.
            self._on_error("auth_key_unregistered")
            await self._prepare_anywhere(info, attempt, progress)
            return
        if isinstance(exc, FileMigrate):
            self._on_error("file_migrate")
            dc = exc.value
            assert attempt.location is not None
            if not isinstance(dc, int) or dc == attempt.location.dc_id:
                raise StreamAborted("Telegram keeps redirecting the file") from exc
            location = FileLocation(attempt.location.location, dc)
            self._catalog.remember(fc, info.message_id, location)
            attempt.location = location
            attempt.pool = self._media.pool(fc, dc)
            try:
                await attempt.pool.ready()
            except (RPCError, OSError) as session_exc:
                raise StreamAborted(f"cannot open DC {dc} via {fc.name}") from session_exc
            return
        if isinstance(exc, FloodWait | FloodPremiumWait):
            self._on_error("flood_wait")
            seconds = _wait_seconds(exc)
            self._fleet.cool_down(fc, seconds)
            log.warning("%s in FloodWait for %ss; moving the stream", fc.name, seconds)
        elif isinstance(exc, ShortRead):
            self._on_error("short_read")
            raise StreamAborted("Telegram returned fewer bytes than the file holds") from exc
        elif isinstance(exc, InternalServerError | ServiceUnavailable):
            log.warning("%s: Telegram keeps failing (%s); trying another client", fc.name, exc.ID)
        elif isinstance(exc, RPCError):
            self._on_error("telegram")
            raise StreamAborted(f"Telegram error {exc.ID}") from exc
        else:
            log.warning("%s: network errors persist (%r); trying another client", fc.name, exc)
        new_fc = await self._acquire(info, exclude=(fc,))
        self._fleet.release(fc)
        attempt.fc, attempt.location, attempt.pool = new_fc, None, None
        if new_fc is not fc:
            progress.switches += 1
        progress.client = new_fc.name
        await self._prepare_anywhere(info, attempt, progress)
