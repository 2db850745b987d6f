"""The supervisor: health checks of fleet clients, and restarts with backoff when one goes bad.

Life of a client as the supervisor sees it::

    HEALTHY --ping fails--> UNHEALTHY --backoff--> RESTARTING --start ok--> HEALTHY
                               ^                        |
                               +------start fails-------+
                                         ... after max_restarts failed attempts --> FAILED

* A check is one ``Ping`` with a timeout, one try, no retry delay: pyrogram's default invoke
  retries network errors ten times a second apart, which would hide a dead connection for 10 s.
* An unhealthy client leaves the selection pool at once (``Fleet.available`` takes only HEALTHY
  clients), so new streams avoid it; its running streams move on their own when their requests
  fail (the streamer fails over on network errors).
* Before a client is stopped for a restart, the supervisor waits (bounded) until no stream holds
  it any more, and after that deadline it cancels the streams still on it, which aborts their
  connections cleanly. Stopping a client under a running stream would close its storage and
  sessions mid-request, and the body could end in an unexpected error.
* A restart attempt first probes the connection (connect, one Ping) and only then runs the full
  start, so an attempt while the network is still down fails fast instead of sitting out the
  start timeout.
* After ``max_restarts`` failed attempts the client is FAILED and the admins are told. A client
  that stays healthy for ``reset_after`` seconds gets its attempt count reset, so a blip a week
  later starts from the short delays again.

Time is injected: ``clock`` for the healthy period, ``sleep`` for the backoff delays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import pyrogram
from pyrogram import raw
from pyrogram.errors import RPCError

from streambot.backoff import Backoff, Sleep
from streambot.event_wait import wait_set
from streambot.fleet import ClientState, Fleet, FleetClient, FleetError
from streambot.notify import Notify

log = logging.getLogger(__name__)

#: Marks a span in the memory log (``MemoryLog.task``); core modules do not import ``utils``.
Span = Callable[[str], AbstractAsyncContextManager[Any]]


class StreamSource(Protocol):
    """What the supervisor reads of the stream registry: each stream's client and task."""

    def streams(self) -> Sequence[Any]: ...


class MediaHealth(Protocol):
    """What the supervisor does with a client's media connections (``MediaPools``)."""

    async def check(self, fc: FleetClient, timeout: float) -> int: ...

    async def close_client(self, fc: FleetClient) -> None: ...


class HealthCheckFailed(Exception):
    """A client did not answer its health check; the message says how."""


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change the supervisor made, for /api/fleet and tests."""

    at: float  # supervisor clock
    client: str
    old: ClientState
    new: ClientState
    reason: str


class Supervisor:
    """Checks fleet clients and restarts unhealthy ones; one restart task per client at most."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        channel_id: int,
        check_timeout: float = 10.0,
        start_timeout: float = 30.0,
        max_restarts: int = 5,
        reset_after: float = 600.0,
        drain_timeout: float = 30.0,
        backoff: Backoff | None = None,
        notify: Notify | None = None,
        registry: StreamSource | None = None,
        media: MediaHealth | None = None,
        span: Span | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        history_limit: int = 200,
    ) -> None:
        if max_restarts < 0:
            raise ValueError("max_restarts must be >= 0")
        self.fleet = fleet
        self.channel_id = channel_id
        self.check_timeout = check_timeout
        self.start_timeout = start_timeout
        self.max_restarts = max_restarts
        self.reset_after = reset_after
        self.drain_timeout = drain_timeout
        self.backoff = backoff or Backoff(5.0)
        self._notify = notify
        self._registry = registry
        self._media = media
        self.media_dropped = 0
        self._span = span
        self._clock = clock
        self._sleep = sleep
        self.history: deque[Transition] = deque(maxlen=history_limit)
        self.checks = 0
        self.total_restarts = 0
        self._healthy_since: dict[str, float] = {}
        self._restarts: dict[str, asyncio.Task[None]] = {}
        self._changed = asyncio.Condition()
        self._closed = False

    # ------------------------------------------------------------------ checks
    async def check_all(self) -> dict[str, ClientState]:
        """Check every client once, concurrently; returns each client's state afterwards."""
        self.checks += 1
        await asyncio.gather(*(self.check(fc) for fc in self.fleet.clients))
        return {fc.name: fc.state for fc in self.fleet.clients}

    async def check(self, fc: FleetClient) -> ClientState:
        """Check one client; an unhealthy one leaves the pool and gets a restart task."""
        if fc.name in self._restarts or self._closed:
            return fc.state
        if fc.state is ClientState.HEALTHY:
            try:
                await self.ping(fc)
            except HealthCheckFailed as exc:
                self._healthy_since.pop(fc.name, None)
                await self._set(fc, ClientState.UNHEALTHY, str(exc))
                log.warning(
                    "client %s failed its health check (%s): out of the pool, restarting",
                    fc.label(),
                    exc,
                    extra={"rate_key": f"supervisor-unhealthy:{fc.name}"},
                )
                self._start_restart(fc)
            else:
                self._note_healthy(fc)
                if self._media is not None:
                    # A dead media connection is dropped here and reopened by the next stream,
                    # instead of being found by a viewer's request.
                    self.media_dropped += await self._media.check(fc, self.check_timeout)
        elif fc.state is ClientState.UNHEALTHY:
            # Marked unhealthy elsewhere (or a restart task was lost to shutdown): restart it.
            self._start_restart(fc)
        return fc.state

    def _note_healthy(self, fc: FleetClient) -> None:
        now = self._clock()
        since = self._healthy_since.setdefault(fc.name, now)
        if fc.restarts and now - since >= self.reset_after:
            log.info(
                "client %s healthy for %.0fs: restart count %d reset",
                fc.label(),
                now - since,
                fc.restarts,
            )
            fc.restarts = 0

    async def ping(self, fc: FleetClient) -> None:
        """One Ping, one try, bounded by ``check_timeout``; raises HealthCheckFailed."""
        await self._ping(fc.client)

    async def _ping(self, client: pyrogram.Client) -> None:
        if not client.is_connected:
            raise HealthCheckFailed("not connected")
        try:
            async with asyncio.timeout(self.check_timeout):
                await client.invoke(
                    raw.functions.Ping(ping_id=random.getrandbits(63)),
                    retries=1,
                    timeout=self.check_timeout,
                    retry_delay=0,
                )
        except TimeoutError as exc:
            # Both our deadline and pyrogram's "Failed to invoke ... after 1 retries" (which is
            # what a network error becomes with retries=1) end up here.
            raise HealthCheckFailed(
                str(exc) or f"no answer within {self.check_timeout:g}s"
            ) from exc
        except (OSError, ConnectionError) as exc:
            raise HealthCheckFailed(f"{type(exc).__name__}: {exc}") from exc
        except RPCError as exc:
            raise HealthCheckFailed(f"Telegram error {exc.ID or exc}") from exc

    # ------------------------------------------------------------------ restarts
    def _start_restart(self, fc: FleetClient) -> None:
        if fc.name in self._restarts or self._closed:
            return
        task = asyncio.get_running_loop().create_task(
            self._restart_loop(fc), name=f"supervisor-restart-{fc.name}"
        )
        self._restarts[fc.name] = task
        task.add_done_callback(lambda _t: self._restarts.pop(fc.name, None))

    def restarting(self) -> list[str]:
        """Names of clients with a restart in progress."""
        return list(self._restarts)

    async def _restart_loop(self, fc: FleetClient) -> None:
        try:
            await self._restart_attempts(fc)
        except Exception:  # loop edge: a bug here must not leave the client RESTARTING
            log.exception("restarting client %s failed unexpectedly", fc.label())
            with contextlib.suppress(Exception):
                await self._set(fc, ClientState.UNHEALTHY, "restart failed unexpectedly")

    async def _restart_attempts(self, fc: FleetClient) -> None:
        while True:
            if fc.restarts >= self.max_restarts:
                await self._fail(fc)
                return
            # A login FloodWait says how long: retrying sooner only makes Telegram's wait longer.
            await self._sleep(
                max(self.backoff.delay(fc.restarts + 1), self.fleet.cooldown_left(fc))
            )
            fc.restarts += 1
            self.total_restarts += 1
            await self._set(
                fc, ClientState.RESTARTING, f"attempt {fc.restarts} of {self.max_restarts}"
            )
            # The fleet sets STARTING/HEALTHY/... itself while starting the client; the attempt as
            # a whole is what the history records: RESTARTING -> HEALTHY or -> UNHEALTHY.
            if await self._restart_once(fc):
                self._healthy_since[fc.name] = self._clock()
                await self._set(
                    fc,
                    ClientState.HEALTHY,
                    f"restarted (attempt {fc.restarts})",
                    old=ClientState.RESTARTING,
                )
                log.info("client %s restarted (attempt %d)", fc.label(), fc.restarts)
                await self._tell_admins()
                return
            await self._set(fc, ClientState.UNHEALTHY, fc.last_error, old=ClientState.RESTARTING)
            log.warning(
                "client %s: restart attempt %d of %d failed: %s",
                fc.label(),
                fc.restarts,
                self.max_restarts,
                fc.last_error,
            )

    async def _restart_once(self, fc: FleetClient) -> bool:
        await self._drain(fc)
        if self._media is not None:
            await self._media.close_client(fc)
        span = self._span(f"Client start {fc.name}") if self._span else contextlib.nullcontext()
        async with span:
            await self._shutdown_client(fc.client)
            try:
                await self._probe(fc.client)
            except HealthCheckFailed as exc:
                fc.last_error = f"probe: {exc}"
                return False
            try:
                await self.fleet.start_client(
                    fc, channel_id=self.channel_id, timeout=self.start_timeout
                )
            except FleetError as exc:
                fc.last_error = str(exc)
                await self._shutdown_client(fc.client)
                return False
        if fc.state is not ClientState.HEALTHY:
            # Started but cannot read the storage channel: not a network problem, yet the
            # client is of no use; count it as a failed attempt.
            await self._shutdown_client(fc.client)
            return False
        return True

    async def _drain(self, fc: FleetClient) -> None:
        """Wait (bounded) until no stream holds ``fc``; then cancel the streams still on it."""
        # Streams leave an unhealthy client within their retry budget (a few seconds).
        if await wait_set(fc.idle, self.drain_timeout) or self._registry is None:
            return
        stuck = [s for s in self._registry.streams() if s.client == fc.name]
        log.warning(
            "client %s still serves %d stream(s) after %.0fs; cutting them before restart",
            fc.label(),
            len(stuck),
            self.drain_timeout,
        )
        for stream in stuck:
            if stream.task is not None and not stream.task.done():
                stream.task.cancel()
        await wait_set(fc.idle, 5.0)

    async def _probe(self, client: pyrogram.Client) -> None:
        """Connect and ping once; leaves the client disconnected either way."""
        try:
            async with asyncio.timeout(self.start_timeout):
                await client.connect()
        except (OSError, ConnectionError, RPCError, TimeoutError) as exc:
            await self._shutdown_client(client)
            raise HealthCheckFailed(f"connect: {type(exc).__name__}: {exc}") from exc
        try:
            await self._ping(client)
        finally:
            await self._shutdown_client(client)

    async def _shutdown_client(self, client: pyrogram.Client) -> None:
        """Bring ``client`` to "disconnected" from whatever state it is in, never raising.

        A start cut short by a timeout leaves it connected but not initialised; ``stop()`` would
        refuse that state, ``disconnect()`` handles it. Handlers stay registered
        (``clear_handlers=False``), so the main bot answers users again after its restart.
        """
        try:
            async with asyncio.timeout(self.start_timeout):
                if client.is_initialized:
                    await client.stop(clear_handlers=False)
                elif client.is_connected:
                    await client.disconnect()
        except (OSError, ConnectionError, RPCError, TimeoutError) as exc:
            log.info("stopping client %s: %s", client.name, exc)

    async def _tell_admins(self) -> None:
        """Pass on what the fleet noted during a start (a session file moved aside)."""
        while self.fleet.notices:
            text = self.fleet.notices.popleft()
            if self._notify is not None:
                try:
                    await self._notify(text)
                except (RPCError, OSError) as exc:
                    log.warning("could not tell the admins: %s", exc)

    async def _fail(self, fc: FleetClient) -> None:
        reason = fc.last_error or "unknown error"
        await self._set(fc, ClientState.FAILED, reason)
        text = (
            f"Telegram client {fc.label()} failed: {self.max_restarts} restarts did not bring it "
            f"back (last error: {reason}). It stays out of the fleet until StreamBot restarts."
        )
        log.error("%s", text)
        if self._notify is not None:
            try:
                await self._notify(text)
            except (RPCError, OSError) as exc:
                log.warning("could not tell the admins about %s: %s", fc.label(), exc)

    # ------------------------------------------------------------------ state and waiting
    async def _set(
        self, fc: FleetClient, state: ClientState, reason: str, *, old: ClientState | None = None
    ) -> None:
        """Change ``fc``'s state and record it; ``old`` overrides what it was (see below)."""
        old = fc.state if old is None else old
        if state is ClientState.HEALTHY:
            self.fleet.mark_healthy(fc)
        elif state is ClientState.UNHEALTHY:
            self.fleet.mark_unhealthy(fc, reason)
        else:
            fc.state = state
        self.history.append(Transition(self._clock(), fc.name, old, state, reason))
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds after some state change (TimeoutError after timeout)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    def snapshot(self) -> dict[str, Any]:
        """The supervisor's view, for /api/fleet."""
        return {
            "checks": self.checks,
            "total_restarts": self.total_restarts,
            "media_sessions_dropped": self.media_dropped,
            "max_restarts": self.max_restarts,
            "restarting": self.restarting(),
            "recent_transitions": [
                {
                    "client": t.client,
                    "from": str(t.old),
                    "to": str(t.new),
                    "reason": t.reason,
                    "seconds_ago": round(self._clock() - t.at, 1),
                }
                for t in list(self.history)[-20:]
            ],
        }

    async def close(self) -> None:
        """Cancel restart tasks in progress and wait for them (shutdown).

        A restart cut short may leave its client connected but not started, a state in which
        ``Client.stop()`` (what the fleet calls next) refuses to run; such clients are
        disconnected here so the fleet's shutdown finds them either running or stopped.
        """
        self._closed = True
        interrupted = [self.fleet.by_name(name) for name in self._restarts]
        tasks = list(self._restarts.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for fc in interrupted:
            if fc.client.is_connected and not fc.client.is_initialized:
                await self._shutdown_client(fc.client)
