"""The fleet: the main bot plus download-only worker bots, their state, load and selection.

Load is counted only through :meth:`Fleet.lease`, a context manager that releases the count on every
exit path, so a stream that dies in any way can never leave a client looking busy forever.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyrogram
from pyrogram.enums import ParseMode
from pyrogram.errors import AuthKeyDuplicated, FloodWait, RPCError, Unauthorized

from streambot.errors import UNREADABLE_ANSWER, UnreadableAnswer
from streambot.private import private_dir, tighten_all
from streambot.transport import LinearAbridged

log = logging.getLogger(__name__)


# Workers with a saved session reconnecting at once at start-up. Bounded because a session whose
# key turns out dead logs in again (ImportBotAuthorization), and many of those together invite
# FloodWait; a handful keeps a 50-bot restart to a few seconds.
RESTART_CONCURRENCY = 4


class ClientState(enum.StrEnum):
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"  # failed a health check; out of the pool until restarted
    RESTARTING = "restarting"
    FAILED = "failed"  # gave up restarting
    NO_ACCESS = "no_access"  # cannot read BIN_CHANNEL
    STOPPED = "stopped"


class FleetError(Exception):
    """Base class of fleet errors."""


class FleetStartError(FleetError):
    """The main bot could not start; the application cannot run."""


class LoginFloodWait(FleetStartError):
    """Telegram answered the bot's login (auth.ImportBotAuthorization) with a FloodWait."""

    def __init__(self, fc: FleetClient, seconds: float) -> None:
        super().__init__(
            f"Telegram asks bot {fc.label()} to wait {seconds:.0f}s ({seconds / 60:.0f} min) "
            "before it logs in again; restarting sooner makes the wait longer"
        )
        self.seconds = seconds


class NoClientAvailable(FleetError):
    """No client can take a stream now; ``retry_after`` says when one may (None: unknown)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _set_event() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


@dataclass(eq=False, slots=True)
class FleetClient:
    """One Telegram bot of the fleet and what the application knows about it."""

    name: str
    client: pyrogram.Client
    is_main: bool
    state: ClientState = ClientState.STARTING
    active_streams: int = 0
    total_streams: int = 0
    flood_until: float = 0.0
    home_dc: int | None = None
    username: str = ""
    restarts: int = 0
    last_error: str = ""
    healthy_since: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Set while no stream holds this client, so a restart can wait for it to drain.
    idle: asyncio.Event = field(default_factory=_set_event)

    def label(self) -> str:
        return f"@{self.username}" if self.username else self.name


def _tighten_session(fc: FleetClient) -> None:
    """The session file pyrogram just created (umask mode) becomes 0600, with its SQLite extras."""
    if not fc.client.in_memory:
        tighten_all(Path(fc.client.workdir), f"{fc.client.name}.session*", announce=False)


def session_logged_in(path: Path) -> bool:
    """Whether pyrogram's session file at ``path`` holds a completed login (an auth key and a user).

    Read-only and never created: a missing or unreadable file (or one whose login never finished)
    means the next start sends auth.ImportBotAuthorization.
    """
    if not path.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT auth_key, user_id FROM sessions LIMIT 1").fetchone()
    except sqlite3.Error:
        return False
    return bool(row and row[0] and row[1])


async def has_saved_login(fc: FleetClient) -> bool:
    """Whether ``fc`` starts from a saved session (no auth.ImportBotAuthorization to send)."""
    client = fc.client
    if client.in_memory:
        return False
    path = Path(client.workdir) / f"{client.name}.session"
    return await asyncio.to_thread(session_logged_in, path)


def bot_id(token: str) -> str:
    """The bot's id: the part of its token before the colon, which is public (the rest is not)."""
    return token.split(":", 1)[0]


def session_name(token: str, *, is_main: bool) -> str:
    """A session file name from the bot id part of a token, never from the secret part.

    Keyed by bot id so a changed token for another bot never reuses a stale session.
    """
    return f"{'main' if is_main else 'worker'}-{bot_id(token)}"


class Fleet:
    """The set of clients, with selection by load and health."""

    def __init__(
        self,
        clients: Sequence[FleetClient],
        *,
        clock: Callable[[], float] = time.monotonic,
        relogin_delay: float = 5.0,
    ) -> None:
        # A web node's fleet has no main bot: its first worker leads (it must start, as the main
        # bot must on the bot node), and nothing in it receives updates.
        if not clients:
            raise ValueError("a fleet needs at least one client")
        if any(fc.is_main for fc in clients[1:]):
            raise ValueError("only the first fleet client may be the main bot")
        self.clients = list(clients)
        self._clock = clock
        self.relogin_delay = relogin_delay
        # What the admins should hear about (a session file moved aside); sent and emptied by
        # whoever can talk to them (start-up, the supervisor). Bounded: oldest dropped.
        self.notices: collections.deque[str] = collections.deque(maxlen=20)

    @classmethod
    def build(
        cls,
        *,
        api_id: int,
        api_hash: str,
        bot_token: str,
        worker_tokens: Sequence[str],
        session_dir: Path,
        workers: int = 4,
        clock: Callable[[], float] = time.monotonic,
        relogin_delay: float = 5.0,
    ) -> Fleet:
        """Create (not start) a client per token; sessions persist in ``session_dir``.

        ``session_dir`` is made owner-only: a session file is a bot's auth key. pyrogram creates
        session files with the umask's mode, so existing ones are tightened here and new ones
        right after their first start (unreadable to others meanwhile: the folder is 0700).
        An empty ``bot_token`` builds a web node's fleet: workers only, never the main bot.
        """
        private_dir(session_dir)
        tighten_all(session_dir, "*.session*")
        specs = ([(bot_token, True)] if bot_token else []) + [(t, False) for t in worker_tokens]
        clients = []
        for token, is_main in specs:
            name = session_name(token, is_main=is_main)
            client = pyrogram.Client(
                name,
                api_id=api_id,
                api_hash=api_hash,
                bot_token=token,
                workdir=str(session_dir),
                no_updates=not is_main,  # workers only download; the main bot handles updates
                # Handler tasks and threads serve updates, which a worker never gets: one each.
                workers=workers if is_main else 1,
                protocol_factory=LinearAbridged,
                sleep_threshold=5,  # longer FloodWaits surface so the stream can move elsewhere
                # Replies carry URLs and user-chosen file names verbatim; pyrogram's default
                # Markdown/HTML parsing would eat "__" or "--" in a link token (breaking the
                # link) and any markup in a name.
                parse_mode=ParseMode.DISABLED,
            )
            clients.append(FleetClient(name=name, client=client, is_main=is_main))
        return cls(clients, clock=clock, relogin_delay=relogin_delay)

    @property
    def main(self) -> FleetClient:
        """The lead client: the main bot, or on a web node the first worker."""
        return self.clients[0]

    def by_name(self, name: str) -> FleetClient:
        for fc in self.clients:
            if fc.name == name:
                return fc
        raise KeyError(name)

    # ------------------------------------------------------------------ lifecycle
    async def start_client(self, fc: FleetClient, *, channel_id: int, timeout: float) -> None:
        """Start one client and check it can read the storage channel; sets its state."""
        fc.state = ClientState.STARTING
        try:
            try:
                await self._login(fc, timeout)
            except (AuthKeyDuplicated, Unauthorized) as exc:
                # The session file's key is dead for good (used by two processes at once, or
                # revoked). Telegram's advice: a new key and a new login. Once, after a pause.
                await self._relogin(fc, exc)
                await self._login(fc, timeout)
        except TimeoutError:
            fc.state = ClientState.FAILED
            fc.last_error = f"no answer from Telegram within {timeout:g}s"
            raise FleetError(fc.last_error) from None
        except FloodWait as exc:
            # Only the login can FloodWait this long at start; a restart loop would make it worse,
            # so the client stays out until the wait has passed (the supervisor waits for it).
            seconds = float(exc.value) if isinstance(exc.value, int) else 0.0
            self.cool_down(fc, seconds)
            fc.state = ClientState.UNHEALTHY
            fc.last_error = f"login FloodWait of {seconds:.0f}s"
            raise LoginFloodWait(fc, seconds) from exc
        except (RPCError, OSError) as exc:
            fc.state = ClientState.FAILED
            fc.last_error = f"{type(exc).__name__}: {exc}"
            raise FleetError(fc.last_error) from exc
        except UNREADABLE_ANSWER as exc:
            fc.state = ClientState.FAILED
            fc.last_error = str(UnreadableAnswer(exc))
            raise FleetError(fc.last_error) from exc
        _tighten_session(fc)
        me = fc.client.me
        fc.username = (me.username or "") if me else ""
        fc.home_dc = await fc.client.storage.dc_id()
        try:
            async with asyncio.timeout(timeout):
                await fc.client.resolve_peer(channel_id)
                await fc.client.get_messages(channel_id, 1)
        except (RPCError, ValueError, KeyError, TimeoutError) as exc:
            fc.state = ClientState.NO_ACCESS
            fc.last_error = getattr(exc, "ID", None) or type(exc).__name__
            log.error(
                "bot %s cannot read the storage channel %s (%s): add %s as an admin of the "
                "channel; it is left out of the fleet until then",
                fc.label(),
                channel_id,
                fc.last_error,
                fc.label(),
            )
            return
        self.mark_healthy(fc)

    async def _login(self, fc: FleetClient, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await fc.client.start()

    async def _relogin(self, fc: FleetClient, exc: RPCError) -> None:
        """Move the dead session file aside (kept for diagnosis) and wait before logging in again."""
        client = fc.client
        with contextlib.suppress(Exception):
            await client.storage.close()  # type: ignore[no-untyped-call]
        moved = ""
        if not client.in_memory:
            path = Path(client.workdir) / f"{client.name}.session"
            if path.exists():
                target = path.with_name(f"{path.name}.dead-{int(time.time())}")
                path.rename(target)
                moved = f"; its session file was moved to {target.name}"
        text = (
            f"Telegram answered {exc.ID} for bot {fc.label()}: its login was invalidated (was the "
            f"same DATA_DIR used by two processes?){moved}. It logs in again with its token."
        )
        log.warning("%s", text)
        self.notices.append(text)
        await asyncio.sleep(self.relogin_delay)

    async def start(
        self,
        *,
        channel_id: int,
        timeout: float = 30.0,
        stagger: float = 1.0,
        span: Callable[[str], AbstractAsyncContextManager[Any]] | None = None,
    ) -> list[FleetClient]:
        """Start the main bot (it must work), then the workers one by one.

        Fresh logins are staggered (``stagger`` seconds before each) because many bot logins in
        a row invite FloodWait on auth.ImportBotAuthorization. A worker whose session file holds a
        completed login sends no ImportBotAuthorization (a restart only reconnects with the saved
        key), so those start first, ``RESTART_CONCURRENCY`` at a time and without the pause: a
        restart of a 50-bot fleet takes seconds, not 50 pauses.
        ``span`` (the memory log's task marker) brackets each client's start. Returns the clients
        that were left out.
        """
        marker = span or (lambda _name: contextlib.nullcontext())

        async def start_one(fc: FleetClient) -> None:
            async with marker(f"Client start {fc.name}"):
                await self.start_client(fc, channel_id=channel_id, timeout=timeout)

        lead = "the main bot" if self.main.is_main else "the first worker bot"
        try:
            await start_one(self.main)
        except LoginFloodWait:
            raise
        except FleetError as exc:
            raise FleetStartError(f"{lead} could not start: {exc}") from exc
        if self.main.state is ClientState.NO_ACCESS:
            raise FleetStartError(
                f"{lead} {self.main.label()} cannot read BIN_CHANNEL {channel_id} "
                f"({self.main.last_error}); add it as an admin of the channel"
            )

        async def start_worker(fc: FleetClient) -> None:
            try:
                await start_one(fc)
            except FleetError as exc:
                log.error("worker %s could not start: %s", fc.name, exc)

        workers = self.clients[1:]
        saved = [await has_saved_login(fc) for fc in workers]
        # Saved sessions only reconnect with their keys: a few at a time, so a restart of a big
        # fleet costs a few round trips, not one start after another.
        gate = asyncio.Semaphore(RESTART_CONCURRENCY)

        async def restart_worker(fc: FleetClient) -> None:
            async with gate:
                await start_worker(fc)

        async with asyncio.TaskGroup() as group:
            for fc, has_login in zip(workers, saved, strict=True):
                if has_login:
                    group.create_task(restart_worker(fc))
        for fc, has_login in zip(workers, saved, strict=True):
            if not has_login:
                if stagger:
                    await asyncio.sleep(stagger)
                await start_worker(fc)
        return [fc for fc in self.clients if fc.state is not ClientState.HEALTHY]

    async def stop(self) -> None:
        for fc in reversed(self.clients):
            if fc.client.is_connected:
                try:
                    await fc.client.stop()
                except (RPCError, OSError, ConnectionError) as exc:
                    log.warning("stopping %s: %s", fc.name, exc)
            fc.state = ClientState.STOPPED

    # ------------------------------------------------------------------ health and load
    def mark_healthy(self, fc: FleetClient) -> None:
        if fc.state is not ClientState.HEALTHY:
            fc.healthy_since = self._clock()
        fc.state = ClientState.HEALTHY

    def mark_unhealthy(self, fc: FleetClient, reason: str) -> None:
        fc.state = ClientState.UNHEALTHY
        fc.last_error = reason
        fc.healthy_since = None

    def cool_down(self, fc: FleetClient, seconds: float) -> None:
        """Keep ``fc`` out of selection until a FloodWait of ``seconds`` has passed."""
        fc.flood_until = max(fc.flood_until, self._clock() + seconds)

    def cooldown_left(self, fc: FleetClient) -> float:
        return max(0.0, fc.flood_until - self._clock())

    def in_cooldown(self, fc: FleetClient) -> bool:
        return fc.flood_until > self._clock()

    def available(self) -> list[FleetClient]:
        return [
            fc
            for fc in self.clients
            if fc.state is ClientState.HEALTHY and not self.in_cooldown(fc)
        ]

    def healthy_count(self) -> int:
        return sum(1 for fc in self.clients if fc.state is ClientState.HEALTHY)

    def pick(self, *, dc_id: int | None = None, exclude: Sequence[FleetClient] = ()) -> FleetClient:
        """The client for a new stream: fewest active streams; ties go to the file's home DC."""
        candidates = [fc for fc in self.available() if fc not in exclude]
        if not candidates:
            waits = [
                fc.flood_until - self._clock()
                for fc in self.clients
                if fc.state is ClientState.HEALTHY and fc not in exclude
            ]
            retry = max(0.0, min(waits)) if waits else None
            raise NoClientAvailable("no Telegram client is available right now", retry)
        return min(
            candidates,
            key=lambda fc: (fc.active_streams, fc.home_dc != dc_id, self.clients.index(fc)),
        )

    def acquire(
        self, *, dc_id: int | None = None, exclude: Sequence[FleetClient] = ()
    ) -> FleetClient:
        """Pick a client and count one active stream on it; pair with :meth:`release`."""
        fc = self.pick(dc_id=dc_id, exclude=exclude)
        fc.active_streams += 1
        fc.total_streams += 1
        fc.idle.clear()
        return fc

    def release(self, fc: FleetClient) -> None:
        fc.active_streams -= 1
        if fc.active_streams == 0:
            fc.idle.set()

    @contextlib.contextmanager
    def lease(
        self, *, dc_id: int | None = None, exclude: Sequence[FleetClient] = ()
    ) -> Iterator[FleetClient]:
        """Hold one active stream on a picked client for the duration of the block."""
        fc = self.acquire(dc_id=dc_id, exclude=exclude)
        try:
            yield fc
        finally:
            self.release(fc)

    def snapshot(self) -> list[dict[str, Any]]:
        now = self._clock()
        return [
            {
                "name": fc.name,
                "bot": fc.label(),
                "role": "main" if fc.is_main else "worker",
                "state": str(fc.state),
                "active_streams": fc.active_streams,
                "total_streams": fc.total_streams,
                "home_dc": fc.home_dc,
                "flood_wait_remaining": round(max(0.0, fc.flood_until - now), 1),
                "restarts": fc.restarts,
                "last_error": fc.last_error,
            }
            for fc in self.clients
        ]
