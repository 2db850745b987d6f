"""The composition root: builds every long-lived object and owns start-up and shutdown order.

Objects are created in :func:`create_app` (inside the running loop, as pyrogram requires) and passed
to each other explicitly; their lifecycles are aiohttp ``cleanup_ctx`` entries, one resource per
entry. Start-up runs top to bottom, shutdown bottom to top:

    simulator (demo/tests only) -> memory log -> store -> fleet -> supervisor -> streaming
    services -> bot -> memory manager -> scheduler

so on shutdown the scheduler stops first (no job runs against a half-stopped app), then the bot,
streams are drained (then cut) before clients stop, the store closes late and the memory log's
last line ("<<< Shutdown") is written last.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from routes import api, client_address, download, keys, player
from routes.connections import ConnectionGuard, GuardedSite, QuietClientErrors
from streambot.admission import Admission
from streambot.backoff import Backoff, Sleep
from streambot.bandwidth import Bandwidth, Quotas
from streambot.bot.handlers import BotContext, BotHandlers
from streambot.bot.ratelimit import LinkRateLimiter
from streambot.botclaims import BotClaims
from streambot.budget import InflightBudget
from streambot.catalog import Catalog
from streambot.config import Settings, save_link_secret
from streambot.fleet import ClientState, Fleet, bot_id
from streambot.guard import LinkGuard
from streambot.heap import Heap, HeapTrimmer
from streambot.media import MediaConfig, MediaPools
from streambot.metrics import Metrics
from streambot.notify import AdminNotifier
from streambot.sessionlock import SessionLock
from streambot.simulator import SimulatedTelegram, offline
from streambot.sqlite_store import SqliteStore
from streambot.store import Store, StoreError, link_secret_fingerprint
from streambot.streamer import Streamer, StreamerConfig
from streambot.supervisor import Supervisor
from streambot.units import KIB, MIB, plural
from utils.cleanup_scheduler import CleanupScheduler, standard_jobs
from utils.memory_manager import CacheRow, MemoryManager, ReportSources
from utils.memory_monitor import MemoryLog
from utils.smart_logger import SmartLogFilter
from utils.stream_cleanup import StreamRegistry

log = logging.getLogger(__name__)

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


@dataclass(slots=True)
class Services:
    """The application's objects, for the few places (demo, tests) that need them directly.

    Every field is built in :func:`create_app`; the ctx entries only open, start and stop them.
    The two optionals are genuinely optional: the simulator exists in demo and tests only, the
    log filter only when logging was configured with one.
    """

    settings: Settings
    fleet: Fleet
    catalog: Catalog
    streamer: Streamer
    budget: InflightBudget
    media: MediaPools
    registry: StreamRegistry
    metrics: Metrics
    bot: BotHandlers
    store: Store
    bandwidth: Bandwidth
    guard: LinkGuard
    notify: AdminNotifier
    memory: MemoryManager
    heap: HeapTrimmer
    memlog: MemoryLog
    supervisor: Supervisor
    scheduler: CleanupScheduler
    connections: ConnectionGuard
    session_lock: SessionLock
    bot_claims: BotClaims
    simulator: SimulatedTelegram | None = None
    log_filter: SmartLogFilter | None = None
    link_secret_fresh: bool = False
    started_at: float = field(default_factory=time.time)
    on_ready: list[Callable[[], Any]] = field(default_factory=list)


SERVICES = web.AppKey("services", Services)


async def create_app(
    settings: Settings,
    *,
    link_secret: bytes,
    link_secret_fresh: bool = False,
    simulator: SimulatedTelegram | None = None,
    log_filter: SmartLogFilter | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Sleep = asyncio.sleep,
) -> web.Application:
    """Build the whole application. With ``simulator`` every Telegram client talks to it.

    ``link_secret_fresh`` says the secret was just generated: the store checks it against the
    secret its links were signed with before it is saved (see ``store.secret_problem``).

    ``log_filter`` is the rate limiter on the log handler (its size shows in /memory); by default
    the one ``__main__.configure_logging`` installed on a root handler, if any.

    ``clock`` and ``sleep`` are the time of the fleet's cooldowns and of every retry wait
    (streamer, supervisor): tests pass a virtual time whose sleep advances its clock, so a
    FloodWait is waited out without spending real seconds.
    """
    trusted = client_address.parse_networks(settings.trusted_proxies)
    # First middleware: every handler, log line and cap sees the client behind a trusted proxy.
    app = web.Application(
        client_max_size=1024,
        middlewares=[client_address.middleware(trusted, settings.forwarded_header)],
    )
    bot_node = settings.node_role == "bot"
    # Before the fleet starts its decryption threads: arenas are handed out as threads first
    # allocate (see streambot/heap.py for what this saves).
    allocator = Heap()
    allocator.limit_arenas(settings.heap_arenas, os.environ)
    fleet = Fleet.build(
        api_id=settings.api_id,
        api_hash=settings.api_hash,
        # A web node never logs in with BOT_TOKEN: one bot session receives updates, and a
        # second login of the same token would fight it for them.
        bot_token=settings.bot_token if bot_node else "",
        worker_tokens=settings.worker_tokens,
        session_dir=settings.data_dir / "sessions",
        workers=settings.workers,
        clock=clock,
        relogin_delay=settings.supervisor_backoff_seconds,
    )
    metrics = Metrics()
    registry = StreamRegistry(
        limit=settings.max_streams, per_client=settings.max_streams_per_client
    )
    metrics.track_active_streams(lambda: len(registry))
    catalog = Catalog(
        fleet,
        settings.bin_channel,
        limit=settings.cache_files_limit,
        ttl=settings.cache_files_ttl,
        on_request=metrics.count_request,
    )
    budget = InflightBudget(settings.stream_memory_budget_mb * MIB, streams=settings.max_streams)
    media = MediaPools(
        fleet,
        MediaConfig(
            connections=settings.media_connections,
            awaited_bytes=settings.media_awaited_kib * KIB,
            liveness=settings.media_liveness_seconds,
            request_timeout=settings.media_request_timeout_seconds,
            open_timeout=settings.telegram_connect_timeout,
        ),
    )
    streamer = Streamer(
        fleet,
        catalog,
        budget,
        StreamerConfig(
            prefetch=settings.stream_prefetch,
            prefetch_start=settings.stream_prefetch_start,  # the streamer caps it at prefetch
            block_size=settings.stream_block_size_kib * KIB,
            retries=settings.stream_retries,
            flood_sleep_threshold=settings.stream_flood_sleep_seconds,
            max_wait=settings.stream_max_wait_seconds,
        ),
        media,
        on_request=metrics.count_request,
        on_error=metrics.count_error,
        sleep=sleep,
    )
    # The engine: PostgreSQL when nodes share DATABASE_URL, else the SQLite file (opened by
    # _store_ctx either way).
    store: Store
    if settings.database_url:
        from streambot.pg_store import PgStore  # asyncpg loads only for nodes that use it

        store = PgStore(settings.database_url, pool_size=settings.database_pool_size)
    else:
        store = SqliteStore(settings.database_file)
    bandwidth = Bandwidth(
        store,
        Quotas.from_gb(
            settings.bandwidth_daily_limit_gb,
            settings.bandwidth_monthly_limit_gb,
            settings.user_daily_limit_gb,
        ),
        flush_seconds=settings.bandwidth_flush_seconds,
        pending_limit=settings.bandwidth_pending_limit,
        cache_seconds=settings.bandwidth_quota_cache_seconds,
    )
    guard = LinkGuard(
        store,
        bandwidth,
        ttl=settings.cache_guard_ttl,
        limit=settings.cache_guard_limit,
    )
    # Admins started a chat with the main bot only; a web node's workers cannot reach them, so
    # its alerts go to its log.
    notify = AdminNotifier(lambda: fleet.main.client, settings.admins if bot_node else ())
    memlog = MemoryLog(
        settings.log_dir,
        max_line_queue=settings.memory_log_queue_limit,
        active_streams=lambda: len(registry),
    )
    memory = MemoryManager(
        limit_mb=settings.memory_limit_mb,
        warning_percent=settings.memory_warning_percent,
        critical_percent=settings.memory_critical_percent,
        gc_threshold_mb=settings.gc_threshold_mb,
        retry_after=settings.memory_retry_after_seconds,
        notify=notify,
    )
    # Freed blocks the C allocator keeps after a burst go back once the streams have drained.
    heap = HeapTrimmer(
        allocator,
        quiet=settings.heap_trim_quiet_seconds,
        active_streams=lambda: len(registry),
        wait_idle=registry.wait_idle,
        span=memlog.task,
        on_trim=metrics.count_heap_trim,
    )
    metrics.track_heap(heap.heap.figures)
    supervisor = Supervisor(
        fleet,
        channel_id=settings.bin_channel,
        check_timeout=settings.supervisor_check_timeout_seconds,
        start_timeout=settings.telegram_connect_timeout,
        max_restarts=settings.supervisor_max_restarts,
        reset_after=settings.supervisor_reset_after_seconds,
        drain_timeout=settings.supervisor_drain_seconds,
        history_limit=settings.supervisor_history_limit,
        backoff=Backoff(
            settings.supervisor_backoff_seconds,
            maximum=max(
                settings.supervisor_backoff_seconds, settings.supervisor_backoff_max_seconds
            ),
        ),
        notify=notify,
        registry=registry,
        media=media,
        span=memlog.task,
        clock=clock,
        sleep=sleep,
    )
    scheduler = CleanupScheduler(
        misfire_grace=settings.job_misfire_grace_seconds,
        shutdown_timeout=settings.scheduler_shutdown_seconds,
        span=memlog.task,
    )
    started_at = time.time()
    limiter = LinkRateLimiter(
        settings.links_per_user_per_hour, max_users=settings.cache_rate_limit_users
    )
    if log_filter is None:
        log_filter = installed_log_filter()
    caches = Caches(catalog, limiter, guard, log_filter)
    sources = ReportSources(
        fleet=fleet,
        started_at=started_at,
        active_streams=lambda: len(registry),
        caches=caches.rows,
        jobs=scheduler.jobs,
        last_trim=lambda: heap.last,
    )
    services = Services(
        settings=settings,
        fleet=fleet,
        catalog=catalog,
        streamer=streamer,
        budget=budget,
        media=media,
        registry=registry,
        metrics=metrics,
        bot=BotHandlers(
            BotContext(
                bin_channel=settings.bin_channel,
                base_url=settings.public_base_url,
                link_secret=link_secret,
                admins=frozenset(settings.admins),
                allowed_users=frozenset(settings.allowed_users),
                store=store,
                guard=guard,
                bandwidth=bandwidth,
                memory_report=lambda: memory.report(sources),
                stats_report=lambda: stats_report(fleet, registry),
                limiter=limiter,
                link_ttl_seconds=round(settings.link_ttl_hours * 3600),
            )
        ),
        store=store,
        bandwidth=bandwidth,
        guard=guard,
        notify=notify,
        memory=memory,
        heap=heap,
        memlog=memlog,
        supervisor=supervisor,
        scheduler=scheduler,
        connections=ConnectionGuard(
            settings.max_connections_per_client,
            exempt=lambda peer: client_address.is_trusted(peer, trusted),
        ),
        session_lock=SessionLock(settings.data_dir / "sessions"),
        bot_claims=BotClaims(
            store,
            [
                bot_id(t)
                for t in ((settings.bot_token,) if bot_node else ()) + settings.worker_tokens
            ],
            settings.data_dir,
        ),
        simulator=simulator,
        link_secret_fresh=link_secret_fresh,
        log_filter=log_filter,
        started_at=started_at,
    )

    app[SERVICES] = services
    app[keys.SETTINGS] = settings
    app[keys.LINK_SECRET] = link_secret
    app[keys.FLEET] = fleet
    app[keys.CATALOG] = catalog
    app[keys.STREAMER] = streamer
    app[keys.REGISTRY] = registry
    app[keys.METRICS] = metrics
    app[keys.STARTED_AT] = services.started_at
    app[keys.SUPERVISOR] = supervisor

    # Memory first: under memory pressure nothing else should even be looked at.
    admission: list[Admission] = [memory, guard]
    app[keys.ADMISSION] = admission
    registry.listeners.append(bandwidth.on_progress)

    if simulator is not None:
        app.cleanup_ctx.append(_simulator_ctx)
    app.cleanup_ctx.append(_session_lock_ctx)
    app.cleanup_ctx.append(_memory_log_span("Startup", "Shutdown", flush=True))
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_bot_claims_ctx)
    app.cleanup_ctx.append(_memory_log_span("Fleet start", "Fleet stop"))
    app.cleanup_ctx.append(_fleet_ctx)
    app.cleanup_ctx.append(_supervisor_ctx)
    app.cleanup_ctx.append(_bandwidth_ctx)
    app.cleanup_ctx.append(_streams_ctx)
    app.cleanup_ctx.append(_bot_ctx)
    app.cleanup_ctx.append(_memory_ctx)
    app.cleanup_ctx.append(_scheduler_ctx)
    app.on_shutdown.append(_on_shutdown)
    download.add_routes(app)
    player.add_routes(app)
    api.add_routes(app)
    return app


@dataclass(frozen=True, slots=True)
class Caches:
    """Each bounded cache that exists in this process, for the /memory report."""

    catalog: Catalog
    limiter: LinkRateLimiter
    guard: LinkGuard
    log_filter: SmartLogFilter | None

    def rows(self) -> list[CacheRow]:
        """Each cache with its size and the bound it enforces."""
        info = self.catalog.info_cache
        rows = [
            CacheRow("File info", len(info), info.limit),
            CacheRow("Rate limits", len(self.limiter), self.limiter.max_users),
            CacheRow("Link facts", len(self.guard), self.guard.limit),
        ]
        if self.log_filter is not None:
            rows.append(CacheRow("Logger keys", self.log_filter.size, self.log_filter.max_keys))
        return rows


def installed_log_filter() -> SmartLogFilter | None:
    """The rate limiter on a root log handler, if logging was configured with one."""
    for handler in logging.getLogger().handlers:
        for candidate in handler.filters:
            if isinstance(candidate, SmartLogFilter):
                return candidate
    return None


async def _simulator_ctx(app: web.Application) -> AsyncIterator[None]:
    simulator = app[SERVICES].simulator
    assert simulator is not None
    with offline(simulator):
        yield


async def _session_lock_ctx(app: web.Application) -> AsyncIterator[None]:
    """One process per sessions folder, held until everything else has stopped."""
    lock = app[SERVICES].session_lock
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _memory_log_span(start: str, end: str, *, flush: bool = False) -> CleanupCtx:
    """A ctx entry that brackets what follows it in the memory log: ">>> start" ... "<<< end"."""

    async def span(app: web.Application) -> AsyncIterator[None]:
        memlog = app[SERVICES].memlog
        await memlog.mark_start(start)
        try:
            yield
        finally:
            await memlog.mark_end(end)
            if flush:
                await memlog.flush()

    return span


async def _supervisor_ctx(app: web.Application) -> AsyncIterator[None]:
    """Restart tasks of the supervisor (its checks are scheduler jobs) end before the fleet stops."""
    services = app[SERVICES]
    await services.memlog.mark_end("Fleet start")
    try:
        yield
    finally:
        await services.memlog.mark_start("Fleet stop")
        await services.supervisor.close()


async def _memory_ctx(app: web.Application) -> AsyncIterator[None]:
    """Memory alerts still being sent get a moment to reach the admins on shutdown."""
    memory = app[SERVICES].memory
    try:
        yield
    finally:
        await memory.close()


async def _scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    """The cleanup jobs: started last, when everything they touch exists; stopped first."""
    services = app[SERVICES]
    settings = services.settings
    scheduler, memlog = services.scheduler, services.memlog
    for spec in standard_jobs(
        settings,
        manager=services.memory,
        registry=services.registry,
        catalog=services.catalog,
        supervisor=services.supervisor,
        memlog=memlog,
        store=services.store,
        bot_claims=services.bot_claims,
        log_filter=services.log_filter,
    ):
        scheduler.add(spec)
    scheduler.start()
    await memlog.mark_end("Startup")
    # The HTTP site starts listening right after the last start-up entry returns.
    async with memlog.task("Web server start"):
        pass
    try:
        yield
    finally:
        await memlog.mark_start("Shutdown")
        await scheduler.shutdown()


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the configured engine, then make sure this node signs links as the others do."""
    services = app[SERVICES]
    store = services.store
    await store.open()
    try:
        secret = app[keys.LINK_SECRET]
        await store.claim_link_secret(
            link_secret_fingerprint(secret), fresh=services.link_secret_fresh
        )
        if services.link_secret_fresh:
            save_link_secret(services.settings, secret)
    except BaseException:
        await store.close()
        raise
    try:
        yield
    finally:
        await store.close()


async def _bot_claims_ctx(app: web.Application) -> AsyncIterator[None]:
    """Claim this node's bots on the shared database before any of them logs in (botclaims)."""
    claims = app[SERVICES].bot_claims
    await claims.claim()
    try:
        yield
    finally:
        # After the fleet stopped (ctx entries unwind in reverse): the bots are free now.
        try:
            await claims.release()
        except StoreError as exc:
            log.warning("could not release this node's bots (they free themselves later): %s", exc)


async def _fleet_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    settings = services.settings
    # Handlers go on before start(): pyrogram adds them from a task, and an update that arrives
    # before that task ran would be dispatched to no handler and lost. A web node has none.
    if services.fleet.main.is_main:
        services.bot.register(services.fleet.main.client)
    try:
        await services.fleet.start(
            channel_id=settings.bin_channel,
            timeout=settings.telegram_connect_timeout,
            stagger=settings.login_stagger_seconds,
            span=services.memlog.task,
        )
    except BaseException:
        await services.fleet.stop()
        raise
    await _warn_unreachable_admins(services)
    try:
        yield
    finally:
        await services.fleet.stop()


async def _warn_unreachable_admins(services: Services) -> None:
    """Name the admins who would miss every alert, once, at start-up (README: Admins)."""
    missing = await services.notify.unreachable()
    if missing:
        log.warning(
            "admin(s) %s cannot be reached by the bot: they never pressed Start in a chat with "
            "it (Telegram does not let bots start conversations), so they get no alerts until "
            "they send it /start",
            ", ".join(map(str, missing)),
        )


async def _bandwidth_ctx(app: web.Application) -> AsyncIterator[None]:
    """Accounting, quotas and revocation; after the streams stop, the last counters are flushed."""
    services = app[SERVICES]
    bandwidth = services.bandwidth
    bandwidth.start()
    # Revocations made on any node drop this node's cached facts at once (PostgreSQL pushes
    # them); the guard's TTL stays the bound when the push is missing or late.
    listener = asyncio.create_task(
        services.store.listen_revocations(services.guard.forget), name="revocation-listener"
    )
    try:
        yield
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await bandwidth.stop()


async def _streams_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    registry = services.registry
    services.heap.start(seen=lambda: registry.completed)
    try:
        yield
    finally:
        await services.heap.close()
        await services.registry.cancel_all()
        await services.catalog.close()
        await services.media.close()


async def _bot_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    while services.fleet.notices:
        await services.notify(services.fleet.notices.popleft())
    left_out = [fc for fc in services.fleet.clients if fc.state is ClientState.NO_ACCESS]
    if left_out:
        names = ", ".join(fc.label() for fc in left_out)
        await services.notify(
            f"Left out of the fleet: {names} cannot read the storage channel. "
            "Add each as an admin of the channel and restart."
        )
    for callback in services.on_ready:
        callback()
    yield


async def _on_shutdown(app: web.Application) -> None:
    """Stop taking requests is aiohttp's part; ours: let running streams finish, up to a deadline."""
    services = app[SERVICES]
    grace = services.settings.shutdown_grace_seconds
    if len(services.registry) and not await services.registry.wait_idle(grace):
        cut = await services.registry.cancel_all()
        log.info("shutdown: cut %d stream(s) still running after %.0fs", cut, grace)


def make_runner(app: web.Application) -> web.AppRunner:
    """The one way the HTTP server is run (CLI, demo, tests over real sockets).

    aiohttp's keep-alive timer closes a connection that has no complete request head
    HTTP_KEEPALIVE_SECONDS after it opened or after its last response (aiohttp's own default is
    3,630 s): idle keep-alive sockets and slowly dribbled headers are both bounded by it.
    """
    settings = app[SERVICES].settings
    return web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=settings.shutdown_grace_seconds,
        keepalive_timeout=settings.http_keepalive_seconds,
        # A request body announced but never sent (no route here takes one) held the socket
        # for aiohttp's 10 s lingering close; one second is plenty for a body really on its way.
        lingering_time=1.0,
        access_log_class=client_address.AccessLogger,
        logger=QuietClientErrors(logging.getLogger("aiohttp.server")),
    )


def make_site(
    runner: web.AppRunner,
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
    sock: socket.socket | None = None,
) -> GuardedSite:
    """A TCP site behind the per-client connection cap; ``await site.start()`` to listen.

    ``reuse_port``: several processes share the port (SO_REUSEPORT), see REUSE_PORT.
    ``sock``: listen on this already bound socket instead (the demo's ``--port 0``).
    """
    app = runner.app
    return GuardedSite(
        runner, app[SERVICES].connections, host, port, reuse_port=reuse_port, sock=sock
    )


async def stats_report(fleet: Fleet, registry: StreamRegistry) -> str:
    """The streams-and-fleet part of /stats (bandwidth usage is added by the bot)."""
    lines = [
        f"Active streams: {len(registry)} ({plural(registry.completed, 'download')} finished "
        "since start)",
        f"Clients: {fleet.healthy_count()}/{len(fleet.clients)} healthy",
    ]
    for fc in fleet.clients:
        lines.append(
            f"  {fc.label()}: {fc.state}, {plural(fc.active_streams, 'stream')} now, "
            f"{fc.total_streams} since start"
        )
    return "\n".join(lines)
