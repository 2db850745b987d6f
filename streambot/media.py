"""Media connections: a small pool per bot x DC, each with bounded bytes awaited and a liveness watch.

kurigram gives a bot one cached media session per DC (``Client.get_session``) and every stream of
that bot shares it. Measured over the wire (``wire-fidelity.md`` §1.2, §1.4) that breaks three ways:

* **a dead connection stalls everything on it**: pyrogram restarts a dropped connection but never
  fails the requests in flight on it, so each waits out its whole timeout (30 s);
* **head-of-line collapse**: nothing bounds the bytes queued behind one connection, so on a slow
  link the tail requests time out, are sent again onto the same pipe while the abandoned answers
  still arrive, and every stream collapses;
* **poisoned sessions**: ``get_session`` caches a foreign-DC session before its authorization
  import succeeded, so after a FloodWait on ``auth.ExportAuthorization`` every GetFile on it gets
  AUTH_KEY_UNREGISTERED until the process restarts.

So StreamBot builds its media connections itself, from pyrogram's own ``Session`` (the class found at
``pyrogram.client.Session`` when the pool opens one, which is also the simulator's seam):

* :class:`MediaSession` adds to it: requests in flight *fail at once* when the connection restarts,
  and fail after ``liveness`` seconds of silence while answers are awaited (the connection is then
  restarted); an answer that arrives for an abandoned request (timed out or cancelled) is dropped
  and only then frees its bytes, so it is never counted twice (nor, while on the wire, zero times).
* :class:`MediaPool` (one per bot x DC) holds up to ``connections`` sessions and sends each request
  to the least-loaded one whose awaited bytes stay within ``awaited_bytes``; when every connection is
  full the request waits *before* it is sent, so the request timeout counts only the bounded queue
  ahead of it on the wire. The DC's auth key counts as authorized only after the import succeeded;
  AUTH_KEY_UNREGISTERED drops the pool's sessions and key, and the next request rebuilds them.
* :class:`MediaPools` holds the pools of the whole fleet, cools down a bot whose connections keep
  dying, and checks every open media session for the supervisor.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import logging
import random
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyrogram
import pyrogram.client
from pyrogram import raw
from pyrogram.crypto import mtproto
from pyrogram.errors import AuthBytesInvalid, RPCError, Unauthorized
from pyrogram.session import Session

from streambot.errors import UNREADABLE_ANSWER, UnreadableAnswer
from streambot.fleet import Fleet, FleetClient
from streambot.units import MIB

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MediaConfig:
    # Media connections per bot x DC. Telegram Desktop opens up to 8 download sessions per DC;
    # each connection has its own decrypt thread in pyrogram.
    connections: int = 4
    # Answer bytes awaited per connection; a request larger than this still goes alone. Official
    # clients keep 512 KiB awaited per connection; StreamBot asks for 1 MiB blocks, so two blocks.
    awaited_bytes: int = 2 * MIB
    # Silence (no packet received) while answers are awaited before the connection counts as dead.
    liveness: float = 3.0
    # One request, counted from the moment it is on the wire (the queue ahead of it is bounded).
    request_timeout: float = 15.0
    # A bot whose media connections died this many times within ``death_window`` seconds is
    # cooled down for ``cooldown`` seconds: its streams move, new ones avoid it.
    deaths_to_cool: int = 3
    death_window: float = 60.0
    cooldown: float = 30.0
    # Opening one connection (connect, Ping, InitConnection; key exchange and import on a foreign DC).
    open_timeout: float = 20.0


class ConnectionLost(ConnectionError):
    """The media connection died (reset, or silent past the liveness window) with this request on it."""


class MediaUnavailable(ConnectionError):
    """No media connection could be opened for this bot and DC."""


class _Signal(asyncio.Event):
    """An event that tells its owner when it is set (pyrogram sets it when the answer arrives)."""

    def __init__(self, on_set: Callable[[], None]) -> None:
        super().__init__()
        self._on_set = on_set

    def set(self) -> None:
        if not self.is_set():
            super().set()
            self._on_set()


class _Answer:
    """Our entry in ``Session.results``: pyrogram's ``handle_packet`` fills ``value``, sets ``event``."""

    __slots__ = (
        "__weakref__",
        "abandoned",
        "event",
        "lost",
        "msg_id",
        "nbytes",
        "sent_at",
        "settled",
        "value",
    )

    def __init__(self, msg_id: int, nbytes: int, on_set: Callable[[_Answer], None]) -> None:
        self.msg_id = msg_id
        self.nbytes = nbytes
        self.value: Any = None
        self.lost = False  # failed because the connection went away
        self.abandoned = False  # nobody waits any more; bytes are released when it arrives
        self.settled = False  # its bytes were released
        self.sent_at = time.monotonic()
        # The signal reaches its answer through a weak reference: a closure over ``self`` made
        # every answer a reference cycle, and each kept its whole block (``value``) alive until a
        # full collection, hundreds of MiB after a busy minute.
        me = weakref.ref(self)

        def answered() -> None:
            answer = me()
            if answer is not None:
                on_set(answer)

        self.event = _Signal(answered)


class MediaSession(Session):
    """A pyrogram ``Session`` whose requests never outlive their connection.

    Used as a mixin over the class at ``pyrogram.client.Session`` (see :func:`session_class`), so
    the in-process simulator's session works too; the wire-level parts then simply never run.
    """

    liveness: float = 3.0
    request_timeout: float = 15.0

    def media_setup(
        self,
        on_death: Callable[[str], None],
        on_release: Callable[[], None],
        on_gone: Callable[[MediaSession], None],
    ) -> None:
        self.awaited = 0
        self.peak_awaited = 0  # the most answer bytes ever awaited at once (bounded by the pool)
        self.answers: dict[int, _Answer] = {}
        self.late_answers = 0  # answers that came for abandoned requests (dropped)
        self.lost_requests = 0
        self._on_death = on_death
        self._on_release = on_release
        self._on_gone = on_gone
        self._last_rx = time.monotonic()
        self._watchdog: asyncio.Task[None] | None = None
        self._closing = False

    # ------------------------------------------------------------------ lifecycle hooks
    async def start(self) -> None:
        await super().start()  # type: ignore[no-untyped-call]
        self._last_rx = time.monotonic()
        self._on_release()  # a (re)started session is room for requests waiting in the pool
        if getattr(self, "connection", None) is not None and self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        self._closing = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._fail_pending("session stopped")
        await super().stop()  # type: ignore[no-untyped-call]

    async def restart(self) -> None:
        """Replace, don't reconnect: pyrogram calls this when the connection dropped (null packet,
        transport error, a start that failed) and would reconnect in place, at once and forever.

        A media session is cheap to replace. Its requests fail now, the pool forgets it and opens
        a new one when a stream asks, so a DC that keeps resetting costs one attempt per request
        instead of a reconnect loop, and the pool's death count can cool the bot down.
        """
        if self._closing:
            return
        if self.answers:
            self._on_death("connection lost")
        self._fail_pending("connection lost")
        await self.stop()
        self._on_gone(self)

    async def _stop(self) -> None:
        # Every stop, including the one inside pyrogram's restart after a null packet: the
        # requests in flight on this connection will never be answered, so they fail now.
        if self.answers and not self._closing:
            self._on_death("connection lost")
        self._fail_pending("connection lost")
        await super()._stop()

    async def handle_packet(self, packet: bytes) -> None:
        self._last_rx = time.monotonic()
        await super().handle_packet(packet)  # type: ignore[no-untyped-call]

    @property
    def usable(self) -> bool:
        return self.is_started.is_set() and not self._closing

    # ------------------------------------------------------------------ requests
    async def fetch(self, query: Any, nbytes: int) -> Any:
        """Send ``query`` (its answer is about ``nbytes``) and return the answer.

        The caller has already counted ``nbytes`` in :attr:`awaited` (see :meth:`MediaPool.fetch`);
        they are released exactly once: when the answer arrives, when the connection dies, or when
        an abandoned request's answer finally arrives (or is given up on).
        Raises ConnectionLost, TimeoutError (alive but no answer in ``request_timeout``), RPCError.
        """
        if getattr(self, "connection", None) is None:
            # In-process simulator: no wire, nothing in flight to lose.
            try:
                return await self.send(query)
            finally:
                self._release_bytes(nbytes)
        for _ in range(4):  # BadServerSalt / BadMsgNotification: send again with a fresh msg_id
            value = await self._send_once(query, nbytes)
            if isinstance(value, raw.types.BadServerSalt):
                self.salt = value.new_server_salt
                self.awaited += nbytes  # re-counted for the resend
                continue
            if isinstance(value, raw.types.BadMsgNotification):
                log.info(
                    "media DC%s: bad_msg_notification %s; resending", self.dc_id, value.error_code
                )
                self.awaited += nbytes
                continue
            if isinstance(value, raw.types.RpcError):
                RPCError.raise_it(value, type(query))
            return value
        raise ConnectionLost("Telegram kept refusing the message (salt or msg_id)")

    async def _send_once(self, query: Any, nbytes: int) -> Any:
        message = await self.msg_factory.create(query)
        answer = _Answer(message.msg_id, nbytes, self._answered)
        if not self.usable:
            self._settle(answer)
            raise ConnectionLost("the media connection is restarting")
        self.results[message.msg_id] = answer  # type: ignore[assignment]
        self.answers[message.msg_id] = answer
        connection = self.connection
        assert connection is not None  # a wire session (checked by fetch)
        protocol = connection.protocol
        assert protocol is not None  # set by connect(), before the session started
        try:
            payload = await asyncio.get_running_loop().run_in_executor(
                protocol.crypto_executor,
                mtproto.pack,
                message,
                self.salt,
                self.session_id,
                self.auth_key,
                self.auth_key_id,
            )
            answer.sent_at = time.monotonic()
            await connection.send(payload)
        except OSError as exc:
            self._forget(answer)
            raise ConnectionLost(f"send failed: {exc!r}") from exc
        except BaseException:
            self._forget(answer)
            raise
        try:
            async with asyncio.timeout(self.request_timeout):
                await answer.event.wait()
        except TimeoutError:
            if answer.event.is_set():
                self._forget(answer)
            else:
                answer.abandoned = True
            raise TimeoutError(f"no answer within {self.request_timeout:g}s") from None
        except asyncio.CancelledError:
            if not answer.event.is_set():
                answer.abandoned = True
            else:
                self._forget(answer)
            raise
        self._forget(answer)
        if answer.lost:
            raise ConnectionLost("the media connection died with the request in flight")
        return answer.value

    def _answered(self, answer: _Answer) -> None:
        """``answer.event`` was set (answer arrived, or the connection died)."""
        if answer.abandoned and not answer.settled:
            self.late_answers += 1  # dropped here: the stream already asked again
            self._forget(answer)

    def _forget(self, answer: _Answer) -> None:
        self.results.pop(answer.msg_id, None)
        self.answers.pop(answer.msg_id, None)
        self._settle(answer)

    def _settle(self, answer: _Answer) -> None:
        if not answer.settled:
            answer.settled = True
            self._release_bytes(answer.nbytes)

    def _release_bytes(self, nbytes: int) -> None:
        self.awaited -= nbytes
        self._on_release()

    def _fail_pending(self, why: str) -> None:
        """Fail every request in flight at once (pyrogram would let each wait out its timeout).

        Their bytes are released now: nothing more arrives on a connection that is gone.
        """
        lost = list(self.answers.values())
        for answer in lost:
            answer.lost = True
            self.lost_requests += 1
            self._forget(answer)
            answer.event.set()
        for result in list(self.results.values()):
            result.event.set()  # pyrogram's own (the Ping at start): value None, fails now
        if lost:
            log.debug("media DC%s: %d request(s) failed: %s", self.dc_id, len(lost), why)

    async def _watch(self) -> None:
        """Restart the connection when answers are awaited and nothing arrives for ``liveness`` s."""
        interval = max(0.05, self.liveness / 4)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for answer in list(self.answers.values()):
                linger = 2 * self.request_timeout + self.liveness
                if answer.abandoned and now - answer.sent_at > linger:
                    # Alive but this answer never came (a lost answer): stop reserving for it.
                    self._forget(answer)
            if not self.answers or not self.is_started.is_set():
                continue
            oldest = min(a.sent_at for a in self.answers.values())
            silent = now - max(self._last_rx, oldest)
            if silent > self.liveness:
                log.warning(
                    "media DC%s: no packet for %.1fs with %d answer(s) awaited; reconnecting",
                    self.dc_id,
                    silent,
                    len(self.answers),
                )
                self._on_death("silent")
                self._fail_pending("silent connection")
                self._last_rx = now
                asyncio.get_running_loop().create_task(self.restart())
                return  # this session is done; restart() stops the watch


@functools.lru_cache(maxsize=4)
def session_class(base: type[Session]) -> type[MediaSession]:
    """:class:`MediaSession` over ``base`` (pyrogram's Session, or the simulator's)."""
    if issubclass(base, MediaSession):
        return base
    made: type[MediaSession] = type(f"Media{base.__name__}", (MediaSession, base), {})
    return made


@dataclass(slots=True)
class _Key:
    """The auth key a bot uses for one DC, and whether Telegram bound it to the bot there."""

    key: bytes
    authorized: bool


class MediaPool:
    """Up to ``config.connections`` media sessions of one bot on one DC."""

    def __init__(
        self,
        fc: FleetClient,
        dc_id: int,
        config: MediaConfig,
        *,
        on_death: Callable[[str], None],
    ) -> None:
        self.fc = fc
        self.dc_id = dc_id
        self.config = config
        self.sessions: list[MediaSession] = []
        self._on_death = on_death
        self._changed = asyncio.Event()
        self._tickets = itertools.count()
        self._queue: collections.deque[int] = collections.deque()  # waiting tickets, in order
        self._opening: asyncio.Task[MediaSession] | None = None
        self._key: _Key | None = None
        self._address: tuple[str, int] | None = None
        self._closed = False
        self.opened = 0

    # ------------------------------------------------------------------ public
    async def ready(self) -> None:
        """Make sure one session is open (authorization included): what preparing a stream needs."""
        if any(s.usable for s in self.sessions):
            return
        if len(self.sessions) < self.config.connections or self._opening is not None:
            await self._open_shared()
            return
        await self._wait_usable()

    async def fetch(self, query: Any, nbytes: int) -> Any:
        session = await self._slot(nbytes)
        try:
            return await session.fetch(query, nbytes)
        except Unauthorized:
            if session in self.sessions:  # the first of the requests that saw it
                await self.invalidate("AUTH_KEY_UNREGISTERED")
            raise

    async def invalidate(self, why: str) -> None:
        """Drop every session and the key (a foreign DC's is made and imported again)."""
        if not self._closed:
            log.warning("%s: media sessions for DC%s dropped: %s", self.fc.name, self.dc_id, why)
        sessions, self.sessions = self.sessions, []
        self._key = None
        for session in sessions:
            await _quiet_stop(session)
        self._changed.set()

    async def check(self, timeout: float) -> int:
        """Ping every open session once; a session that does not answer is dropped. Returns drops."""
        dropped = 0
        for session in list(self.sessions):
            if not session.usable:
                continue
            try:
                async with asyncio.timeout(timeout):
                    await session.send(
                        raw.functions.Ping(ping_id=random.getrandbits(63)), timeout=timeout
                    )
            except Unauthorized:
                await self.invalidate("AUTH_KEY_UNREGISTERED on a health check")
                return dropped + 1
            except (OSError, RPCError, TimeoutError) as exc:
                log.warning(
                    "%s: media session DC%s failed its check: %r", self.fc.name, self.dc_id, exc
                )
                self.sessions.remove(session)
                await _quiet_stop(session)
                dropped += 1
        return dropped

    async def close(self) -> None:
        self._closed = True
        if self._opening is not None:
            self._opening.cancel()
            with contextlib.suppress(BaseException):
                await self._opening
        if self.sessions:
            await self.invalidate("closing")

    def stats(self) -> dict[str, Any]:
        return {
            "client": self.fc.name,
            "dc": self.dc_id,
            "connections": len(self.sessions),
            "awaited_bytes": sum(s.awaited for s in self.sessions),
            "peak_awaited_bytes": max((s.peak_awaited for s in self.sessions), default=0),
            "late_answers": sum(s.late_answers for s in self.sessions),
            "lost_requests": sum(s.lost_requests for s in self.sessions),
            "opened": self.opened,
        }

    # ------------------------------------------------------------------ slots
    async def _slot(self, nbytes: int) -> MediaSession:
        """The least-loaded usable session with room for ``nbytes``; its bytes are counted here.

        Requests get room in the order they asked (a ticket queue): under load a stream's next
        block waits its turn instead of losing every race to streams that happened to wake first.
        """
        cap = self.config.awaited_bytes
        ticket = next(self._tickets)
        self._queue.append(ticket)
        try:
            while True:
                if self._closed:
                    raise MediaUnavailable("media connections are closing")
                self._changed.clear()
                usable = [s for s in self.sessions if s.usable]
                if self._queue[0] == ticket:
                    free = [s for s in usable if s.awaited == 0 or s.awaited + nbytes <= cap]
                    if free:
                        session = min(free, key=lambda s: s.awaited)
                        session.awaited += nbytes
                        session.peak_awaited = max(session.peak_awaited, session.awaited)
                        return session
                if len(self.sessions) < self.config.connections and self._opening is None:
                    # Opened in the background; requests take whichever room frees up first.
                    self._open_background()
                if not usable and self._opening is not None:
                    await asyncio.shield(self._opening)  # its failure is the caller's failure
                    continue
                if not usable:
                    await self._wait_usable()
                    continue
                await self._changed.wait()
        finally:
            self._queue.remove(ticket)
            self._changed.set()  # the next ticket may be able to go now

    async def _wait_usable(self) -> None:
        """Every session is restarting: wait one liveness window for any change."""
        self._changed.clear()
        try:
            async with asyncio.timeout(self.config.liveness):
                await self._changed.wait()
        except TimeoutError:
            raise MediaUnavailable(
                f"no media connection to DC{self.dc_id} came back within {self.config.liveness:g}s"
            ) from None

    def _released(self) -> None:
        self._changed.set()

    def _gone(self, session: MediaSession) -> None:
        if session in self.sessions:
            self.sessions.remove(session)
        self._changed.set()

    # ------------------------------------------------------------------ opening
    def _open_background(self) -> None:
        task = self._start_open()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _open_shared(self) -> MediaSession:
        task = self._opening or self._start_open()
        return await asyncio.shield(task)

    def _start_open(self) -> asyncio.Task[MediaSession]:
        task = asyncio.get_running_loop().create_task(self._open())
        self._opening = task

        def done(t: asyncio.Task[MediaSession]) -> None:
            if self._opening is t:
                self._opening = None
            self._changed.set()

        task.add_done_callback(done)
        return task

    async def _open(self) -> MediaSession:
        try:
            async with asyncio.timeout(self.config.open_timeout):
                return await self._open_unbounded()
        except UNREADABLE_ANSWER as exc:
            raise UnreadableAnswer(exc) from exc

    async def _open_unbounded(self) -> MediaSession:
        client = self.fc.client
        home = await client.storage.dc_id()
        test_mode = await client.storage.test_mode()
        if self._address is None:
            option = await client.get_dc_option(self.dc_id, is_media=True, ipv6=client.ipv6)
            self._address = (option.ip_address, option.port)
        host, port = self._address
        if self._key is None:
            if self.dc_id == home:
                self._key = _Key(await client.storage.auth_key(), authorized=True)
            else:
                auth = pyrogram.client.Auth(client, self.dc_id, host, port, test_mode)
                self._key = _Key(await auth.create(), authorized=False)  # type: ignore[no-untyped-call]
        key = self._key
        cls = session_class(pyrogram.client.Session)
        session = cls(client, self.dc_id, host, port, key.key, test_mode, is_media=True)
        session.media_setup(self._died, self._released, self._gone)
        session.liveness = self.config.liveness
        session.request_timeout = self.config.request_timeout
        try:
            await session.start()
            if not session.is_started.is_set():
                # pyrogram's start schedules a restart and returns when its Ping fails.
                raise MediaUnavailable(f"media connection to DC{self.dc_id} did not start")
            if not key.authorized:
                await self._import(session)
                key.authorized = True
        except BaseException:
            await _quiet_stop(session)
            raise
        if self._closed:
            await _quiet_stop(session)
            raise MediaUnavailable("media connections are closing")
        self.sessions.append(session)
        self.opened += 1
        return session

    async def _import(self, session: MediaSession) -> None:
        """Bind the new key to the bot on this DC; nothing is kept unless this succeeds."""
        client = self.fc.client
        for _ in range(3):
            exported = await client.invoke(
                raw.functions.auth.ExportAuthorization(dc_id=self.dc_id), sleep_threshold=0
            )
            try:
                await session.invoke(
                    raw.functions.auth.ImportAuthorization(id=exported.id, bytes=exported.bytes),
                    sleep_threshold=0,
                    retries=1,
                )
            except AuthBytesInvalid:
                continue
            return
        raise AuthBytesInvalid()

    def _died(self, why: str) -> None:
        self._on_death(why)


async def _quiet_stop(session: Session) -> None:
    with contextlib.suppress(Exception):
        await session.stop()  # type: ignore[no-untyped-call]


@dataclass(slots=True)
class _Deaths:
    times: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=64))


class MediaPools:
    """Every bot's media pools, keyed by client and DC (at most fleet size x five DCs)."""

    def __init__(
        self, fleet: Fleet, config: MediaConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.fleet = fleet
        self.config = config
        self._clock = clock
        self._pools: dict[tuple[str, int], MediaPool] = {}
        self._deaths: dict[str, _Deaths] = {}
        self.cooldowns = 0

    def pool(self, fc: FleetClient, dc_id: int) -> MediaPool:
        key = (fc.name, dc_id)
        pool = self._pools.get(key)
        if pool is None:
            pool = MediaPool(fc, dc_id, self.config, on_death=lambda why: self._died(fc, why))
            self._pools[key] = pool
        return pool

    def _died(self, fc: FleetClient, why: str) -> None:
        """A media connection of ``fc`` died; too many deaths in a window cool the bot down."""
        deaths = self._deaths.setdefault(fc.name, _Deaths())
        now = self._clock()
        deaths.times.append(now)
        recent = [t for t in deaths.times if now - t <= self.config.death_window]
        if len(recent) >= self.config.deaths_to_cool and not self.fleet.in_cooldown(fc):
            log.warning(
                "%s: %d media connections died within %.0fs (%s); cooling it down for %.0fs",
                fc.label(),
                len(recent),
                self.config.death_window,
                why,
                self.config.cooldown,
            )
            self.fleet.cool_down(fc, self.config.cooldown)
            self.cooldowns += 1
            deaths.times.clear()

    async def check(self, fc: FleetClient, timeout: float) -> int:
        """Health-check ``fc``'s media sessions (supervisor); returns how many were dropped."""
        dropped = 0
        for (name, _dc), pool in list(self._pools.items()):
            if name == fc.name:
                dropped += await pool.check(timeout)
        return dropped

    async def close_client(self, fc: FleetClient) -> None:
        """Stop ``fc``'s media sessions (before the client itself restarts or stops)."""
        for key in [k for k in self._pools if k[0] == fc.name]:
            pool = self._pools.pop(key)
            await pool.close()

    async def close(self) -> None:
        pools = list(self._pools.values())
        self._pools.clear()
        await asyncio.gather(*(p.close() for p in pools), return_exceptions=True)

    def stats(self) -> list[dict[str, Any]]:
        return [pool.stats() for pool in self._pools.values()]
