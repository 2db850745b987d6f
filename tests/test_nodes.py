"""Several nodes on one store: roles, the shared link secret, pushed revocations, refusals at start.

The full proof (three processes over the wire on one simulated Telegram) is test_three_nodes.py;
these run the real application in-process, each node on its own copy of the same seeded world, so
message ids (and therefore links) agree across nodes by construction.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from streambot.app import create_app
from streambot.config import Settings, load_link_secret
from streambot.fleet import session_name
from streambot.schema import latest_version
from streambot.simulator import SyntheticContent
from streambot.simulator.world import build_world, world_settings
from streambot.store import LinkSecretMismatch

from .helpers import GOOD, StartApp, streambot

CONTENT = SyntheticContent(50_000, seed=3)


async def test_a_web_node_serves_downloads_and_never_logs_in_as_the_main_bot(
    start_app: StartApp,
) -> None:
    """NODE_ROLE=web: its worker streams the file byte-exact; BOT_TOKEN never reaches Telegram."""
    world = build_world(workers=1)
    _, msg = world.store(CONTENT, name="w.bin")
    node = await start_app(world, node_role="web")
    resp = await node.client.get(node.dl_path(msg, "w.bin"))
    assert resp.status == 200
    assert await resp.read() == CONTENT.read_sync(0, CONTENT.size)
    main_session = session_name(world.main_bot.token, is_main=True)
    clients = {client for (_method, client) in world.telegram.counts}
    assert main_session not in clients
    assert clients == {session_name(w.token, is_main=False) for w in world.workers}
    assert world.telegram.count("upload.GetFile") > 0
    assert [fc.is_main for fc in node.services.fleet.clients] == [False]


async def test_revocation_reaches_another_node_by_push_not_by_ttl(
    pg_url: str, start_app: StartApp
) -> None:
    """Two nodes on PostgreSQL: a revocation on A is a 410 on B within 100 ms, though B trusts
    its cached facts for a minute (so only the NOTIFY can have told it)."""
    world_a, world_b = build_world(), build_world(workers=1)
    _, msg_a = world_a.store(CONTENT, name="r.bin")
    _, msg_b = world_b.store(CONTENT, name="r.bin")
    assert msg_a == msg_b
    node_a = await start_app(world_a, database_url=pg_url)
    node_b = await start_app(world_b, database_url=pg_url, node_role="web", cache_guard_ttl=60.0)
    store_b = node_b.services.store
    await asyncio.wait_for(store_b.listening.wait(), 10)  # type: ignore[attr-defined]
    path = node_b.dl_path(msg_b, "r.bin")
    assert (await node_b.client.get(path, headers={"Range": "bytes=0-0"})).status == 206
    start = time.perf_counter()
    assert await node_a.services.store.revoke(msg_a, by=1)
    while (await node_b.client.get(path, headers={"Range": "bytes=0-0"})).status != 410:
        assert time.perf_counter() - start < 0.1, "B still serves a link revoked on A"
        await asyncio.sleep(0.002)


async def test_a_node_with_another_secret_refuses_to_start(
    pg_url: str, start_app: StartApp, tmp_path: Path
) -> None:
    """The first node records its secret's fingerprint; a second with another secret fails."""
    await start_app(build_world(), database_url=pg_url)
    world = build_world()
    settings = world_settings(Settings(), world, data_dir=tmp_path / "other")
    app = await create_app(
        dataclasses.replace(settings, database_url=pg_url, log_dir=tmp_path / "logs"),
        link_secret=b"another-secret-0123456789abcdef0123",
        simulator=world.telegram,
    )
    server = TestServer(app)
    with pytest.raises(LinkSecretMismatch, match="same LINK_SECRET"):
        await server.start_server()
    await server.close()


def test_a_lost_link_secret_is_not_silently_replaced(tmp_path: Path) -> None:
    """`run` on a database that holds files, with DATA_DIR/link_secret gone: one sentence, exit 3,
    and no new secret written (the operator can still restore the old one)."""
    data = tmp_path / "data"
    data.mkdir()
    db = data / "streambot.sqlite3"
    _database_with_a_file(db)
    result = streambot("run", cwd=tmp_path, **GOOD, DATA_DIR=str(data), LOG_LEVEL="WARNING")
    assert result.returncode == 3, result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("StreamBot could not start: the database already holds 1 file")
    assert "restore DATA_DIR/link_secret" in last
    assert last.count(". ") == 0  # one sentence
    assert not (data / "link_secret").exists()
    # With LINK_SECRET given explicitly the operator's choice is adopted (then Telegram is tried).
    settings = Settings.from_env({**GOOD, "DATA_DIR": str(data)})
    assert load_link_secret(settings)[1] is True


def test_an_older_node_refuses_a_newer_schema_in_one_sentence(tmp_path: Path) -> None:
    """`run` against a database written by newer code exits 3 naming both versions."""
    data = tmp_path / "data"
    data.mkdir()
    with closing(sqlite3.connect(data / "streambot.sqlite3")) as conn:
        conn.execute("PRAGMA user_version = 42")
    result = streambot("run", cwd=tmp_path, **GOOD, DATA_DIR=str(data), LOG_LEVEL="WARNING")
    assert result.returncode == 3, result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("StreamBot could not start: database ")
    known = latest_version()
    assert f"has schema version 42, but this StreamBot supports up to version {known}" in last
    assert last.count(". ") == 0  # one sentence


# -- helpers ---------------------------------------------------------------------------------


def _database_with_a_file(path: Path) -> None:
    async def make() -> None:
        from streambot.sqlite_store import SqliteStore
        from streambot.store import StoredFile

        async with await SqliteStore(path).open() as store:
            await store.add_file(StoredFile(5, 500, "u", "a.bin", 9, "application/x", 1.0))

    asyncio.run(make())
