"""What only the PostgreSQL engine promises: concurrent migrations, pushed revocations, shared flushes.

The contract both engines share is in test_store.py; these need a server (skipped without one).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import time
from collections import Counter
from typing import Any

import asyncpg
import pytest

from streambot.pg_store import LISTENER_NAME, PgStore, describe_dsn
from streambot.schema import latest_version
from streambot.store import SchemaTooNew, StoreError

from .pg import fresh_schema

DAY = "2024-05-01"


def _open_in_a_process(url: str, barrier: Any, out: Any) -> None:
    async def main() -> str:
        barrier.wait()  # every process reaches its first query at the same moment
        store = PgStore(url)
        try:
            await store.open()
        except Exception as exc:  # reported to the parent, which asserts on it
            return f"{type(exc).__name__}: {exc}"
        finally:
            await store.close()
        return f"ok {store.schema_version}"

    out.put(asyncio.run(main()))


def test_fifteen_nodes_migrating_an_empty_database_together_all_succeed() -> None:
    """15 processes open the same empty database at once: all succeed, each version applied once."""

    async def setup_and_check(run: object) -> list[tuple[int]]:
        async with fresh_schema() as url:
            results = await asyncio.to_thread(run, url)  # type: ignore[operator]
            conn = await asyncpg.connect(url)
            try:
                versions = await conn.fetch("SELECT version FROM schema_version ORDER BY version")
            finally:
                await conn.close()
            assert results == [f"ok {latest_version()}"] * 15, results
            return [tuple(v) for v in versions]

    def run(url: str) -> list[str]:
        ctx = multiprocessing.get_context("spawn")
        barrier, out = ctx.Barrier(15), ctx.Queue()
        procs = [
            ctx.Process(target=_open_in_a_process, args=(url, barrier, out)) for _ in range(15)
        ]
        for p in procs:
            p.start()
        results = [out.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        return sorted(results)

    versions = asyncio.run(setup_and_check(run))
    assert versions == [(v,) for v in range(1, latest_version() + 1)]


async def test_a_newer_schema_is_refused_in_one_sentence() -> None:
    """A database migrated by newer code: the older node refuses, naming both versions, untouched."""
    async with fresh_schema() as url:
        await (await PgStore(url).open()).close()
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("INSERT INTO schema_version VALUES (99, 0)")
            with pytest.raises(
                SchemaTooNew, match=rf"version 99.*up to version {latest_version()}"
            ) as caught:
                await PgStore(url).open()
            assert str(caught.value).count(". ") == 0
            assert await conn.fetchval("SELECT max(version) FROM schema_version") == 99
        finally:
            await conn.close()


async def test_reopen_applies_no_migration(pg_url: str) -> None:
    """The second node to open an up-to-date database commits nothing."""
    first = await PgStore(pg_url).open()
    assert first.transactions == latest_version()
    await first.close()
    async with await PgStore(pg_url).open() as second:
        assert second.transactions == 0
        assert second.schema_version == latest_version()


async def test_unreachable_server_is_a_store_error_without_the_password() -> None:
    """A wrong port fails with StoreError naming host and port, never the password."""
    url = "postgresql://user:hunter2-secret@127.0.0.1:1/streambot"
    with pytest.raises(StoreError) as caught:
        await PgStore(url, timeout=2).open()
    assert "127.0.0.1:1" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert describe_dsn(url) == "postgresql://127.0.0.1:1/streambot"


async def test_calls_after_close_raise_store_error(pg_url: str) -> None:
    store = await PgStore(pg_url).open()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.is_revoked(1)
    with pytest.raises(StoreError, match="closed"):
        await store.add_bandwidth({(DAY, "global", ""): 1})


async def _listening(
    url: str,
) -> tuple[PgStore, asyncio.Queue[tuple[int, float]], asyncio.Task[None]]:
    store = await PgStore(url, keepalive_seconds=0.5, reconnect_max_seconds=0.2).open()
    seen: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
    task = asyncio.create_task(
        store.listen_revocations(lambda mid: seen.put_nowait((mid, time.perf_counter())))
    )
    await asyncio.wait_for(store.listening.wait(), 10)
    return store, seen, task


async def test_a_revocation_reaches_another_node_within_100_ms(pg_url: str) -> None:
    """Node A revokes; node B's listener hears of it (NOTIFY at commit) well within 100 ms."""
    a = await PgStore(pg_url).open()
    b, seen, task = await _listening(pg_url)
    try:
        latencies = []
        for mid in range(1, 21):
            start = time.perf_counter()
            assert await a.revoke(mid, by=1)
            got, at = await asyncio.wait_for(seen.get(), 5)
            assert got == mid
            latencies.append(at - start)
        assert await a.revoke(1, by=1) is False  # a repeat notifies nobody
        await asyncio.sleep(0.05)
        assert seen.empty()
        latencies.sort()
        assert latencies[-1] < 0.1, latencies
        print(
            f"revocation NOTIFY latency p50 {latencies[10] * 1000:.2f} ms max {latencies[-1] * 1000:.2f} ms"
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await a.close()
        await b.close()


async def test_a_dropped_listener_replays_what_it_missed(pg_url: str) -> None:
    """Kill B's listening backend, revoke while it is down: after reconnecting B is told anyway."""
    a = await PgStore(pg_url).open()
    b, seen, task = await _listening(pg_url)
    admin = await asyncpg.connect(pg_url)
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1",
            f"{LISTENER_NAME} {os.getpid()}",
        )
        assert killed == 1
        # Revoke before B can possibly be listening again: its NOTIFY reaches no one.
        assert await a.revoke(77, by=1)
        got, _ = await asyncio.wait_for(seen.get(), 10)
        assert got == 77
        assert b.listener_connects == 2
        # And the new connection listens: a later revocation arrives as a notification.
        notified = b.notifications
        assert await a.revoke(78, by=1)
        got, _ = await asyncio.wait_for(seen.get(), 5)
        assert got == 78
        assert b.notifications == notified + 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await admin.close()
        await a.close()
        await b.close()


async def test_concurrent_flushes_from_three_nodes_add_up_without_deadlock(pg_url: str) -> None:
    """Three stores flush overlapping batches at once (always the global row): sums are exact."""
    nodes = [await PgStore(pg_url, pool_size=2).open() for _ in range(3)]
    expected: Counter[tuple[str, str, str]] = Counter()
    rng = random.Random(7)
    batches = []
    for i in range(90):
        batch = {(DAY, "global", ""): rng.randrange(1, 1 << 20)}
        for _ in range(40):
            batch[(DAY, "file", str(rng.randrange(200)))] = rng.randrange(1, 1 << 16)
            batch[(DAY, "owner", str(rng.randrange(20)))] = rng.randrange(1, 1 << 16)
        expected.update(batch)
        batches.append((nodes[i % 3], batch, f"n{i % 3}:{i}"))
    try:
        start = time.perf_counter()
        await asyncio.gather(*(node.add_bandwidth(b, flush_id=fid) for node, b, fid in batches))
        elapsed = time.perf_counter() - start
        for (day, scope, key), n in expected.items():
            assert await nodes[0].bandwidth_total(scope, key, day, day) == n
        rows = sum(len(b) for _, b, _ in batches)
        print(f"{len(batches)} flushes ({rows} counters) from 3 nodes in {elapsed:.3f}s")
    finally:
        for node in nodes:
            await node.close()
