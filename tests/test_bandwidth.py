"""Bandwidth accounting, batching, quotas with period roll-over, cleanup, and revocation across nodes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from streambot.bandwidth import Bandwidth, Quotas, seconds_until_next_day
from streambot.errors import QuotaExceeded, ServiceBusy
from streambot.simulator import SyntheticContent
from streambot.simulator.world import build_world
from streambot.sqlite_store import SqliteStore
from streambot.store import Store, StoredFile, StoreError

from .clock import ManualClock
from .helpers import Running, StartApp, free_port

DAY = 86_400.0
T0 = datetime(2026, 3, 31, 23, 0, tzinfo=UTC).timestamp()  # one hour before a month ends


async def own(app: Running, message_id: int, owner: int, size: int) -> None:
    """Record ``owner`` as the owner of a stored message, as the bot does when it copies a file."""
    store = app.services.store
    assert store is not None
    await store.add_file(
        StoredFile(owner, message_id, f"u{message_id}", "f.bin", size, "application/x", time.time())
    )


async def totals(app: Running) -> tuple[int, Store]:
    bw = app.services.bandwidth
    assert bw is not None
    await bw.flush()
    store = app.services.store
    assert store is not None
    today = datetime.now(UTC).date().isoformat()
    return await store.bandwidth_total("global", "", today, today), store


async def test_accounting_equals_bytes_received(world, start_app: StartApp) -> None:
    """Concurrent full and ranged downloads are counted exactly, per service, owner and file."""
    size = 300_000
    _, m1 = world.store(SyntheticContent(size, seed=1), name="a.bin")
    _, m2 = world.store(SyntheticContent(size, seed=2), name="b.bin")
    app = await start_app(world, stream_block_size_kib=16)
    await own(app, m1, 42, size)
    ranges = [None, "bytes=0-0", "bytes=1000-99999", "bytes=-5000", "bytes=0-9,20-29"]
    received = 0

    async def fetch(path: str, header: str | None) -> int:
        headers = {"Range": header} if header else {}
        resp = await app.client.get(path, headers=headers)
        return len(await resp.read())

    jobs = [fetch(app.dl_path(m, "x"), r) for m in (m1, m2) for r in ranges for _ in range(3)]
    received = sum(await asyncio.gather(*jobs))
    total, store = await totals(app)
    per_file = {
        m: await store.bandwidth_total("file", str(m), "2000-01-01", "9999-12-31") for m in (m1, m2)
    }
    owner = await store.bandwidth_total("owner", "42", "2000-01-01", "9999-12-31")
    # Multipart framing bytes are HTTP overhead, not file bytes: count only file bytes.
    framing = received - (per_file[m1] + per_file[m2])
    assert total == per_file[m1] + per_file[m2]
    assert owner == per_file[m1]
    assert per_file[m1] == per_file[m2]
    assert 0 <= framing < 2000


async def test_aborted_downloads_are_counted_once(world, start_app: StartApp) -> None:
    """Bytes of aborted downloads are counted once: accounting equals what the registry saw sent."""
    _, msg = world.store(SyntheticContent(4 * 1024 * 1024, seed=3), name="big.bin")
    app = await start_app(world, stream_block_size_kib=16, stream_prefetch=2)
    url = app.client.make_url(app.dl_path(msg, "big.bin"))
    received = 0
    async with aiohttp.ClientSession() as session:
        for _ in range(5):
            resp = await session.get(url)
            received += len(await resp.content.readexactly(50_000))
            resp.close()
    registry = app.services.registry
    assert await registry.wait_idle(5)
    total, _ = await totals(app)
    sent = int(app.services.metrics.bytes_sent._value.get())
    assert total == sent
    assert total >= received


async def test_flush_is_one_transaction_per_batch(world, start_app: StartApp) -> None:
    """Hundreds of chunks become one write transaction per flush, not one per chunk."""
    _, msg = world.store(SyntheticContent(400_000, seed=4), name="c.bin")
    app = await start_app(world, stream_block_size_kib=4)
    store = app.services.store
    bw = app.services.bandwidth
    assert store is not None
    assert bw is not None
    await bw.flush()
    before = store.transactions
    for _ in range(3):
        resp = await app.client.get(app.dl_path(msg))
        assert len(await resp.read()) == 400_000
    await bw.flush()
    assert store.transactions == before + 1


async def test_quota_boundary_and_rollover(tmp_path: Path) -> None:
    """Over a limit a new download is refused until the UTC day or month rolls over."""
    clock = ManualClock(T0)
    store = await SqliteStore(tmp_path / "db.sqlite3").open()
    try:
        bw = Bandwidth(store, Quotas(daily=0, monthly=10_000, per_owner_daily=1000), clock=clock)
        bw.count(1, 7, 999)
        await bw.check(7)  # 999 < 1000: still allowed
        bw.count(1, 7, 1)
        with pytest.raises(QuotaExceeded) as owner_err:
            await bw.check(7)
        assert owner_err.value.retry_after == pytest.approx(3600)
        await bw.check(8)  # other owners are unaffected
        bw.count(2, 8, 9000)
        await bw.flush()
        with pytest.raises(ServiceBusy) as global_err:
            await bw.check(None)
        assert global_err.value.retry_after == pytest.approx(3600)
        clock.now += 3601  # April 1st: new day and new month
        await bw.check(7)
        await bw.check(None)
        assert seconds_until_next_day(clock.now) == pytest.approx(DAY - 1)
    finally:
        await store.close()


async def test_quota_answers_over_http(world, start_app: StartApp) -> None:
    """A download over the owner's daily limit gets 429 with Retry-After; a global one 503."""
    _, msg = world.store(SyntheticContent(600, seed=5), name="d.bin")
    app = await start_app(world, user_daily_limit_gb=1e-6)  # 1000 bytes
    await own(app, msg, 99, 600)
    path = app.dl_path(msg, "d.bin")
    assert (await app.client.get(path)).status == 200
    assert (await app.client.get(path)).status == 200
    resp = await app.client.get(path)
    assert resp.status == 429
    assert 0 < int(resp.headers["Retry-After"]) <= DAY
    assert "limit" in (await resp.text())


async def test_cleanup_removes_exactly_old_records(tmp_path: Path) -> None:
    """The daily cleanup deletes records older than the keep period and reports how many."""
    clock = ManualClock(T0)
    store = await SqliteStore(tmp_path / "db.sqlite3").open()
    try:
        bw = Bandwidth(store, Quotas(), clock=clock)
        for days_ago in (100, 91, 90, 5, 0):
            clock.now = T0 - days_ago * DAY
            bw.count(1, 2, 10)
            await bw.flush()
        clock.now = T0
        removed = await bw.cleanup(90)
        assert removed == 2 * 3  # two old days x (global, file, owner)
        assert await store.bandwidth_total("global", "", "2000-01-01", "9999-12-31") == 30
    finally:
        await store.close()


async def test_revocation_reaches_another_node(tmp_path: Path, start_app: StartApp) -> None:
    """Two nodes share the database: a revocation on one makes the other answer 410.

    Node B trusts nothing it read (CACHE_GUARD_TTL=0), so its very next request sees the
    revocation; that a positive TTL bounds the delay is proven with a controlled clock in
    test_guard.py.
    """
    db = str(tmp_path / "shared.sqlite3")
    # B is a web node with a worker bot of its own: one bot in two live nodes is refused.
    world_a, world_b = build_world(), build_world(workers=1)
    _, msg_a = world_a.store(SyntheticContent(100, seed=1), name="e.bin")
    _, msg_b = world_b.store(SyntheticContent(100, seed=1), name="e.bin")
    assert msg_a == msg_b
    node_a = await start_app(world_a, database_path=db)
    node_b = await start_app(world_b, database_path=db, node_role="web", cache_guard_ttl=0.0)
    path = node_b.dl_path(msg_b, "e.bin")
    assert (await node_b.client.get(path)).status == 200
    assert node_a.services.store is not None
    await node_a.services.store.revoke(msg_a, by=1)
    assert (await node_b.client.get(path)).status == 410


def _db_total(db: Path) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = con.execute(
            "SELECT COALESCE(SUM(bytes), 0) FROM bandwidth WHERE scope='global'"
        ).fetchone()
        return int(row[0])
    finally:
        con.close()


@contextlib.contextmanager
def demo_process(
    tmp_path: Path, flush_seconds: str
) -> Iterator[tuple[subprocess.Popen[bytes], list[dict], Path]]:
    """Run the demo in a subprocess with its data in ``tmp_path``; yields it once its links exist."""
    data = tmp_path / "data"
    links = tmp_path / "links.json"
    env = {
        **os.environ,
        "DATA_DIR": str(data),
        "LOG_DIR": str(tmp_path / "logs"),  # never the checkout's logs/
        "BANDWIDTH_FLUSH_SECONDS": flush_seconds,
        "LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "streambot", "demo", "--port", str(free_port())]
    proc = subprocess.Popen(
        [*command, "--links-out", str(links)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not links.exists():
            assert proc.poll() is None, "the demo exited early"
            assert time.monotonic() < deadline, "the demo did not start in 30 s"
            time.sleep(0.05)
        yield proc, json.loads(links.read_text()), data / "streambot.sqlite3"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _download(url: str) -> int:
    with urllib.request.urlopen(url) as r:
        return len(r.read())


def test_crash_loses_at_most_one_flush_interval(tmp_path: Path) -> None:
    """Killed with SIGKILL between flushes, the database keeps every byte flushed before the kill."""
    with demo_process(tmp_path, flush_seconds="0.3") as (proc, entries, db):
        small = next(e for e in entries if e["name"].endswith(".txt"))
        big = next(e for e in entries if e["name"].endswith(".zip"))
        first = _download(small["download_url"])
        deadline = time.monotonic() + 10
        while _db_total(db) < first:  # wait for a flush, bounded by the deadline
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = _download(big["download_url"])
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert first <= _db_total(db) <= first + second


def test_clean_shutdown_loses_nothing(tmp_path: Path) -> None:
    """After SIGTERM every byte sent is in the database, though no periodic flush ran."""
    with demo_process(tmp_path, flush_seconds="3600") as (proc, entries, db):
        sent = sum(_download(e["download_url"]) for e in entries)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert _db_total(db) == sent


async def test_issue_11_long_stream_is_billed_to_its_owner_after_guard_eviction(
    world, start_app: StartApp
) -> None:
    """A stream still running after the guard forgot its file is billed to its owner to the end."""
    size = 32 * 1024 * 1024  # far more than socket buffers hold: most bytes go out after eviction
    _, long_msg = world.store(SyntheticContent(size, seed=11), name="long.bin")
    _, other = world.store(SyntheticContent(1000, seed=12), name="other.bin")
    app = await start_app(world, cache_guard_limit=1, stream_block_size_kib=1024)
    await own(app, long_msg, 42, size)
    await own(app, other, 43, 1000)
    guard, bw = app.services.guard, app.services.bandwidth
    url = app.client.make_url(app.dl_path(long_msg, "long.bin"))
    async with aiohttp.ClientSession() as session:
        resp = await session.get(url)
        received = len(await resp.content.readexactly(64 * 1024))
        # Admission of another file pushes the long stream's facts out of the 1-entry guard.
        other_resp = await app.client.get(app.dl_path(other))
        assert len(await other_resp.read()) == 1000
        assert long_msg not in guard
        await bw.flush()
        billed_before = await app.services.store.bandwidth_total(
            "file", str(long_msg), "2000-01-01", "9999-12-31"
        )
        received += len(await resp.content.read())
    assert received == size
    assert billed_before < size  # the rest of the body really was sent after the eviction
    await bw.flush()
    store = app.services.store
    everything = ("2000-01-01", "9999-12-31")
    assert await store.bandwidth_total("file", str(long_msg), *everything) == size
    assert await store.bandwidth_total("owner", "42", *everything) == size
    assert await store.bandwidth_total("owner", "43", *everything) == 1000


class LosesAnswers:
    """The real store, reached over a link that fails on the next write: either before the
    database saw it, or after it committed (the answer is lost on the way back)."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.fail: str | None = None  # "before" | "after" | None

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    async def add_bandwidth(self, batch: dict, *, flush_id: str | None = None) -> bool:
        mode, self.fail = self.fail, None
        if mode == "before":
            raise StoreError("connection reset before the commit")
        applied = await self.store.add_bandwidth(batch, flush_id=flush_id)
        if mode == "after":
            raise StoreError("connection reset after the commit")
        return applied


@pytest.mark.parametrize("failure", ["before", "after"])
async def test_a_failed_flush_is_retried_and_counted_exactly_once(
    tmp_path: Path, failure: str
) -> None:
    """Whether the failed write reached the database or not, after the retry every byte counts once."""
    clock = ManualClock(T0)
    store = await SqliteStore(tmp_path / "db.sqlite3").open()
    link = LosesAnswers(store)
    try:
        bw = Bandwidth(link, Quotas(), clock=clock)  # type: ignore[arg-type]
        bw.count(1, 7, 1000)
        link.fail = failure
        with pytest.raises(StoreError):
            await bw.flush()
        # Still counted for quotas meanwhile (if the write did land, briefly twice: erring on
        # the side of the limit until the retry settles it).
        assert await bw.usage("global", "") >= 1000
        bw.count(1, 7, 24)  # more traffic while the first batch is unconfirmed
        await bw.flush()
        day = datetime.fromtimestamp(T0, UTC).date().isoformat()
        assert await store.bandwidth_total("global", "", day, day) == 1024
        assert await store.bandwidth_total("owner", "7", day, day) == 1024
        assert await store.bandwidth_total("file", "1", day, day) == 1024
        assert bw.pending_bytes == 0
        await bw.flush()  # nothing left: a no-op
        assert await store.bandwidth_total("global", "", day, day) == 1024
    finally:
        await store.close()
