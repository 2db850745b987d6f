"""The composition root: builds every long-lived object and owns start-up and shutdown order.

Objects are created in :func:`create_app` (inside the running loop, as pyrogram requires) and passed
to each other explicitly; their lifecycles are aiohttp ``cleanup_ctx`` entries, one resource per
entry. Start-up runs top to bottom, shutdown bottom to top:

    simulator (demo/tests only) -> store -> fleet -> streaming services -> bot

so on shutdown the bot stops first, streams are drained (then cut) before clients stop, and the
store closes last.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
from aiohttp import web

from routes import api, download, player
from streambot import keys
from streambot.bandwidth import Bandwidth, Quotas
from streambot.blocks import MIB
from streambot.bot.handlers import BotContext, BotHandlers, human_size
from streambot.bot.notify import AdminNotifier
from streambot.bot.ratelimit import LinkRateLimiter
from streambot.catalog import Catalog
from streambot.config import Settings
from streambot.fleet import ClientState, Fleet
from streambot.guard import LinkGuard
from streambot.metrics import Metrics
from streambot.simulator import SimulatedTelegram, offline
from streambot.store import Store
from streambot.streamer import InflightBudget, Streamer, StreamerConfig
from utils.stream_cleanup import StreamRegistry

log = logging.getLogger(__name__)

SERVICES = web.AppKey("services", "Services")


@dataclass(slots=True)
class Services:
    """The application's objects, for the few places (demo, tests) that need them directly."""

    settings: Settings
    fleet: Fleet
    catalog: Catalog
    streamer: Streamer
    budget: InflightBudget
    registry: StreamRegistry
    metrics: Metrics
    bot: BotHandlers
    store: Store | None = None
    bandwidth: Bandwidth | None = None
    guard: LinkGuard | None = None
    notify: AdminNotifier | None = None  # type: ignore[assignment]
    simulator: SimulatedTelegram | None = None
    started_at: float = field(default_factory=time.time)
    on_ready: list[Callable[[], Any]] = field(default_factory=list)


async def create_app(
    settings: Settings,
    *,
    link_secret: bytes,
    simulator: SimulatedTelegram | None = None,
) -> web.Application:
    """Build the whole application. With ``simulator`` every Telegram client talks to it."""
    app = web.Application(client_max_size=1024)
    fleet = Fleet.build(
        api_id=settings.api_id,
        api_hash=settings.api_hash,
        bot_token=settings.bot_token,
        worker_tokens=settings.worker_tokens,
        session_dir=settings.data_dir / "sessions",
        workers=settings.workers,
    )
    metrics = Metrics()
    registry = StreamRegistry(limit=settings.max_streams)
    metrics.track_active_streams(lambda: len(registry))
    catalog = Catalog(
        fleet,
        settings.bin_channel,
        limit=settings.cache_files_limit,
        ttl=settings.cache_files_ttl,
        on_request=metrics.count_request,
    )
    budget = InflightBudget(settings.stream_memory_budget_mb * MIB)
    streamer = Streamer(
        fleet,
        catalog,
        budget,
        StreamerConfig(
            prefetch=settings.stream_prefetch,
            block_size=settings.stream_block_size_kib * 1024,
            retries=settings.stream_retries,
            flood_sleep_threshold=settings.stream_flood_sleep_seconds,
            max_wait=settings.stream_max_wait_seconds,
        ),
        on_request=metrics.count_request,
        on_error=metrics.count_error,
    )
    services = Services(
        settings=settings,
        fleet=fleet,
        catalog=catalog,
        streamer=streamer,
        budget=budget,
        registry=registry,
        metrics=metrics,
        bot=BotHandlers(
            BotContext(
                bin_channel=settings.bin_channel,
                base_url=settings.public_base_url,
                link_secret=link_secret,
                admins=frozenset(settings.admins),
                allowed_users=frozenset(settings.allowed_users),
                limiter=LinkRateLimiter(settings.links_per_user_per_hour),
                link_ttl_seconds=round(settings.link_ttl_hours * 3600),
            )
        ),
        simulator=simulator,
    )
    services.notify = AdminNotifier(lambda: fleet.main.client, settings.admins)
    services.bot.ctx.memory_report = lambda: basic_memory_report(services)
    services.bot.ctx.stats_report = lambda: basic_memory_report(services)

    app[SERVICES] = services
    app[keys.SETTINGS] = settings
    app[keys.LINK_SECRET] = link_secret
    app[keys.FLEET] = fleet
    app[keys.CATALOG] = catalog
    app[keys.STREAMER] = streamer
    app[keys.REGISTRY] = registry
    app[keys.METRICS] = metrics
    app[keys.ADMISSION] = []
    app[keys.STARTED_AT] = services.started_at

    if simulator is not None:
        app.cleanup_ctx.append(_simulator_ctx)
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_fleet_ctx)
    app.cleanup_ctx.append(_bandwidth_ctx)
    app.cleanup_ctx.append(_streams_ctx)
    app.cleanup_ctx.append(_bot_ctx)
    app.on_shutdown.append(_on_shutdown)
    download.add_routes(app)
    player.add_routes(app)
    api.add_routes(app)
    return app


async def _simulator_ctx(app: web.Application) -> AsyncIterator[None]:
    simulator = app[SERVICES].simulator
    assert simulator is not None
    with offline(simulator):
        yield


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    services.store = await Store.open(services.settings.database_file)
    try:
        yield
    finally:
        await services.store.close()


async def _fleet_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    settings = services.settings
    try:
        await services.fleet.start(
            channel_id=settings.bin_channel,
            timeout=settings.telegram_connect_timeout,
            stagger=settings.login_stagger_seconds,
        )
    except BaseException:
        await services.fleet.stop()
        raise
    try:
        yield
    finally:
        await services.fleet.stop()


async def _bandwidth_ctx(app: web.Application) -> AsyncIterator[None]:
    """Accounting, quotas and revocation; after the streams stop, the last counters are flushed."""
    services = app[SERVICES]
    settings = services.settings
    assert services.store is not None
    bandwidth = Bandwidth(
        services.store,
        Quotas.from_gb(
            settings.bandwidth_daily_limit_gb,
            settings.bandwidth_monthly_limit_gb,
            settings.user_daily_limit_gb,
        ),
        flush_seconds=settings.bandwidth_flush_seconds,
        pending_limit=settings.bandwidth_pending_limit,
    )
    guard = LinkGuard(services.store, bandwidth)
    services.bandwidth, services.guard = bandwidth, guard
    services.bot.ctx.store, services.bot.ctx.bandwidth, services.bot.ctx.guard = (
        services.store,
        bandwidth,
        guard,
    )

    async def admit(request: web.Request, claims: Any, info: Any) -> None:
        await guard.check(claims.message_id)

    def count(stream: Any, sent: int) -> None:
        bandwidth.count(stream.message_id, guard.owner_of(stream.message_id), sent)

    app[keys.ADMISSION].append(admit)
    services.registry.listeners.append(count)
    bandwidth.start()
    try:
        yield
    finally:
        await bandwidth.stop()


async def _streams_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    try:
        yield
    finally:
        await services.registry.cancel_all()
        await services.catalog.close()


async def _bot_ctx(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    services.bot.register(services.fleet.main.client)
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


async def basic_memory_report(services: Services) -> str:
    rss = psutil.Process().memory_info().rss
    fleet = services.fleet
    return (
        f"RSS: {human_size(rss)}\n"
        f"Active streams: {len(services.registry)}\n"
        f"Clients: {fleet.healthy_count()}/{len(fleet.clients)} healthy"
    )
