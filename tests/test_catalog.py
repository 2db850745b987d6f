"""The catalog: file info and per-client locations in bounded TTL caches, against the simulator.

Catalogs here are built on a running application's real fleet with an injected clock, so TTLs
are driven without waiting; the HTTP-level answers (404, 502) go through the real route.
"""

from __future__ import annotations

import asyncio

import pytest

from streambot.catalog import Catalog
from streambot.errors import FileNotFound, StreamAborted
from streambot.simulator import SyntheticContent
from streambot.simulator.world import World, build_world

from .clock import ManualClock
from .helpers import Running, StartApp, eventually, expected


def catalog_on(app: Running, clock: ManualClock, *, limit: int = 8, ttl: float = 60) -> Catalog:
    return Catalog(app.services.fleet, app.world.channel_id, limit=limit, ttl=ttl, clock=clock)


def is_fresh(catalog: Catalog, message_id: int) -> bool:
    cached = catalog.info_cache.get(message_id)
    return cached is not None and cached[1]


def gets(world: World) -> int:
    return world.telegram.count("channels.GetMessages")


# ----------------------------------------------------------------------------- on the simulator


async def test_info_is_cached_and_bounded(world: World, start_app: StartApp) -> None:
    """A hit costs no request; past CACHE_FILES_LIMIT the oldest file is asked for again."""
    ids = [world.store(SyntheticContent(10 + i, seed=i), name=f"{i}.txt")[1] for i in range(3)]
    app = await start_app(world)
    catalog = catalog_on(app, ManualClock(), limit=2)
    before = gets(world)
    infos = [await catalog.info(i) for i in ids]
    assert [info.size for info in infos] == [10, 11, 12]
    assert gets(world) == before + 3
    assert await catalog.info(ids[2]) == infos[2]
    assert gets(world) == before + 3
    assert len(catalog.info_cache) == 2
    await catalog.info(ids[0])  # evicted: asked again
    assert gets(world) == before + 4
    await catalog.close()


async def test_stale_entry_is_served_while_a_background_refresh_runs(
    world: World, start_app: StartApp
) -> None:
    """After the TTL the old info answers at once; a single background refresh updates it."""
    f, msg_id = world.store(SyntheticContent(10, seed=1), name="old.txt")
    app = await start_app(world)
    clock = ManualClock()
    catalog = catalog_on(app, clock, ttl=60)
    assert (await catalog.info(msg_id)).name == "old.txt"
    f.name = "new.txt"  # Telegram now says something else
    clock.now += 61
    world.telegram.rtt = 3600  # and answers slowly: nobody may wait for it
    before = gets(world)
    stale = await asyncio.wait_for(asyncio.gather(*(catalog.info(msg_id) for _ in range(5))), 1)
    assert {info.name for info in stale} == {"old.txt"}
    await eventually(lambda: world.telegram.inflight["channels.GetMessages"] == 1)
    assert gets(world) == before + 1  # one refresh for five stale reads
    await catalog.close()  # cancels the hanging refresh
    world.telegram.rtt = 0
    catalog = catalog_on(app, clock, ttl=60)
    await catalog.info(msg_id)
    clock.now += 61
    assert (await catalog.info(msg_id)).name == "new.txt"  # fetched fresh: it was a miss
    f.name = "newer.txt"
    clock.now += 61
    assert (await catalog.info(msg_id)).name == "new.txt"  # stale, refresh started
    await eventually(lambda: is_fresh(catalog, msg_id))
    assert (await catalog.info(msg_id)).name == "newer.txt"
    await catalog.close()


async def test_concurrent_misses_share_one_request(world: World, start_app: StartApp) -> None:
    """Ten simultaneous lookups of an uncached message cost Telegram one GetMessages."""
    _f, msg_id = world.store(SyntheticContent(10, seed=1), name="a.txt")
    app = await start_app(world)
    catalog = catalog_on(app, ManualClock())
    world.telegram.rtt = 0.01
    before = gets(world)
    infos = await asyncio.gather(*(catalog.info(msg_id) for _ in range(10)))
    assert len(set(infos)) == 1
    assert gets(world) == before + 1
    await catalog.close()


async def test_missing_or_empty_message_is_file_not_found(
    world: World, start_app: StartApp
) -> None:
    """A deleted message raises FileNotFound, and a refresh that finds it gone drops the entry."""
    _f, msg_id = world.store(SyntheticContent(10, seed=1), name="a.txt")
    app = await start_app(world)
    clock = ManualClock()
    catalog = catalog_on(app, clock)
    with pytest.raises(FileNotFound):
        await catalog.info(msg_id + 100)
    await catalog.info(msg_id)
    world.telegram.delete_message(world.channel, msg_id)
    clock.now += 61
    await catalog.info(msg_id)  # stale copy; the refresh finds the message gone
    await eventually(lambda: catalog.info_cache.get(msg_id) is None)
    with pytest.raises(FileNotFound):
        await catalog.info(msg_id)
    resp = await app.client.get(app.dl_path(msg_id))  # the app's own catalog never saw it
    assert resp.status == 404
    await catalog.close()


async def test_telegram_error_on_a_miss_is_stream_aborted_and_502(
    world: World, start_app: StartApp
) -> None:
    """When Telegram refuses the lookup the catalog raises StreamAborted; the route answers 502."""
    _f, msg_id = world.store(SyntheticContent(10, seed=1), name="a.txt")
    app = await start_app(world)
    world.telegram.inject("channels.GetMessages", code=400, message="CHANNEL_INVALID", times=2)
    with pytest.raises(StreamAborted):
        await catalog_on(app, ManualClock()).info(msg_id)
    resp = await app.client.get(app.dl_path(msg_id))
    assert resp.status == 502
    assert resp.headers["Retry-After"] == "5"
    resp = await app.client.get(app.dl_path(msg_id))
    assert resp.status == 200
    assert await resp.read() == expected(1, 0, 9)


async def test_location_is_per_client_and_refreshes_an_expired_reference(
    start_app: StartApp,
) -> None:
    """Each client resolves its own reference; refresh=True fetches a new one after expiry."""
    world = build_world(workers=1)
    f, msg_id = world.store(SyntheticContent(10, seed=1), name="a.txt")
    app = await start_app(world)
    catalog = catalog_on(app, ManualClock())
    main, worker = app.services.fleet.clients
    loc_main = await catalog.location(main, msg_id)
    loc_worker = await catalog.location(worker, msg_id)
    assert loc_main.location.file_reference != loc_worker.location.file_reference
    assert await catalog.location(main, msg_id) is loc_main  # cached
    world.telegram.expire_file_reference(f.media_id)
    fresh = await catalog.location(main, msg_id, refresh=True)
    assert fresh.location.file_reference != loc_main.location.file_reference
    assert fresh.location.file_reference == f.file_reference(world.main_bot.bot_id)
    await catalog.close()


async def test_long_floodwait_on_lookup_gives_502_not_a_hung_request(world, start_app) -> None:
    """pyrogram sleeps through FloodWait in get_messages; the catalog bounds it and answers 502."""
    from streambot.simulator import SyntheticContent as Content

    _, msg = world.store(Content(100, seed=1), name="a.bin")
    app = await start_app(world)
    app.services.catalog.lookup_timeout = 0.3
    world.telegram.flood_wait(3600, method="channels.GetMessages")
    resp = await app.client.get(app.dl_path(msg, "a.bin"))
    assert resp.status == 502
    assert resp.headers["Retry-After"]


@pytest.mark.parametrize(
    ("mime", "name", "expected"),
    [
        ("video/mp4", "a.bin", "video/mp4"),
        ("video/mp4\r\nX-Evil: 1", "clip.mp4", "video/mp4"),
        ("vidéo/mp4", "a.zip", "application/zip"),
        ("nonsense", "a.unknownext", "application/octet-stream"),
    ],
)
async def test_uploader_mime_types_are_sanitised(world, start_app, mime, name, expected) -> None:
    """Only a plain type/subtype from Telegram reaches Content-Type; anything else is guessed."""
    from streambot.simulator import SyntheticContent as Content

    _f, msg = world.store(Content(10, seed=1), name=name, mime_type=mime, kind="document")
    app = await start_app(world)
    resp = await app.client.get(app.dl_path(msg, name), headers={"Range": "bytes=0-1,4-5"})
    assert resp.status == 206
    assert f"Content-Type: {expected}" in (await resp.read()).decode("latin-1")
    head = await app.client.head(app.dl_path(msg, name))
    assert head.headers["Content-Type"] == expected
