"""The store contract on both engines (SQLite and PostgreSQL), plus each engine's own guarantees."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import re
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from streambot.botclaims import STALE_SECONDS, BotsInUse, Node
from streambot.pg_store import PgStore
from streambot.schema import MIGRATIONS, latest_version
from streambot.sqlite_store import SqliteStore
from streambot.store import (
    ConflictError,
    LinkSecretMismatch,
    SchemaTooNew,
    Store,
    StoredFile,
    StoreError,
    link_secret_fingerprint,
    secret_problem,
)

from .clock import ManualClock
from .pg import fresh_schema

LATEST_VERSION = 4

# A frozen snapshot of what a v1 database looked like on disk. It is written out by hand
# (not taken from the store's migration list) so that editing the migrations cannot
# silently change what "an old database" means in the upgrade test.
V1_SCHEMA = """
CREATE TABLE bans (
    user_id INTEGER PRIMARY KEY, banned_by INTEGER NOT NULL,
    reason TEXT NOT NULL DEFAULT '', banned_at REAL NOT NULL
);
CREATE TABLE files (
    id INTEGER PRIMARY KEY, owner_id INTEGER NOT NULL, message_id INTEGER NOT NULL UNIQUE,
    unique_id TEXT NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL CHECK (size >= 0),
    mime_type TEXT NOT NULL, created_at REAL NOT NULL, UNIQUE (owner_id, unique_id)
);
CREATE TABLE revocations (
    message_id INTEGER PRIMARY KEY, revoked_by INTEGER NOT NULL, revoked_at REAL NOT NULL
);
CREATE INDEX revocations_revoked_at ON revocations (revoked_at);
PRAGMA user_version = 1;
"""


def make_file(
    owner_id: int = 1, message_id: int = 100, unique_id: str = "u1", created_at: float = 1.0
) -> StoredFile:
    return StoredFile(
        owner_id=owner_id,
        message_id=message_id,
        unique_id=unique_id,
        name=f"{unique_id}.mkv",
        size=1234,
        mime_type="video/x-matroska",
        created_at=created_at,
    )


def make_v1_database(path: Path, extra_sql: str = "") -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(V1_SCHEMA + extra_sql)
        conn.execute("INSERT INTO bans VALUES (7, 1, 'spam', 10.0)")
        conn.execute(
            "INSERT INTO files (owner_id, message_id, unique_id, name, size, mime_type,"
            " created_at) VALUES (5, 500, 'old', 'old.bin', 9, 'application/octet-stream', 2.0)"
        )
        conn.execute("INSERT INTO revocations VALUES (499, 1, 20.0)")
        conn.commit()


def pragma(path: Path, name: str) -> object:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]


def store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("streambot-store")]


@pytest.fixture(params=["memory", "file"])
def db_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    if request.param == "memory":
        return ":memory:"
    return tmp_path / "nested" / "dir" / "streambot.db"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["sqlite-memory", "sqlite-file", "postgres"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[Store]:
    """The contract's subject: every engine, each fresh and empty."""
    async with contextlib.AsyncExitStack() as stack:
        s: Store
        if request.param == "postgres":
            s = PgStore(await stack.enter_async_context(fresh_schema()), clock=clock)
        elif request.param == "sqlite-memory":
            s = SqliteStore(":memory:", clock=clock)
        else:
            s = SqliteStore(tmp_path / "nested" / "dir" / "streambot.db", clock=clock)
        await s.open()
        yield s
        await s.close()


# -- open / schema ---------------------------------------------------------------------


async def test_open_creates_wal_file_with_parent_dirs(tmp_path: Path) -> None:
    """Opening a path creates missing parent dirs and a WAL-mode database at the latest version."""
    path = tmp_path / "a" / "b" / "streambot.db"
    store = await SqliteStore(path).open()
    assert store.schema_version == LATEST_VERSION
    await store.close()

    assert path.is_file()
    assert pragma(path, "journal_mode") == "wal"
    assert pragma(path, "user_version") == LATEST_VERSION


async def test_open_reports_latest_schema(store: Store) -> None:
    """A fresh database (memory or file) is migrated all the way to the latest version."""
    assert store.schema_version == LATEST_VERSION


async def test_reopen_is_a_no_op_migration(tmp_path: Path) -> None:
    """Reopening an up-to-date file applies no migration transactions."""
    path = tmp_path / "db.sqlite"
    first = await SqliteStore(path).open()
    assert first.transactions == LATEST_VERSION  # one transaction per migration
    await first.close()

    async with await SqliteStore(path).open() as second:
        assert second.schema_version == LATEST_VERSION
        assert second.transactions == 0


async def test_migrates_v1_database(tmp_path: Path) -> None:
    """A hand-built v1 file is upgraded to v2 with its rows intact and bandwidth usable."""
    path = tmp_path / "v1.db"
    make_v1_database(path)

    async with await SqliteStore(path).open() as store:
        assert store.schema_version == LATEST_VERSION
        assert await store.is_banned(7)
        assert await store.is_revoked(499)
        old = await store.find_file(5, "old")
        assert old is not None
        assert (old.message_id, old.name, old.size) == (500, "old.bin", 9)
        await store.add_bandwidth({("2024-05-01", "file", "500"): 42})
        assert await store.bandwidth_total("file", "500", "2024-05-01", "2024-05-01") == 42

    assert pragma(path, "user_version") == LATEST_VERSION


async def test_schema_too_new_is_refused_untouched(tmp_path: Path) -> None:
    """A file with user_version 99 raises SchemaTooNew naming both versions and is not modified."""
    path = tmp_path / "future.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 99")

    with pytest.raises(SchemaTooNew, match=rf"version 99.*version {LATEST_VERSION}"):
        await SqliteStore(path).open()

    assert pragma(path, "user_version") == 99
    assert pragma(path, "journal_mode") == "delete"  # not switched to WAL
    assert store_threads() == []  # the failed open shut its worker down


async def test_failed_migration_rolls_back(tmp_path: Path) -> None:
    """A migration that fails part-way leaves the file at its previous version."""
    path = tmp_path / "clash.db"
    # A stray v1-era table with the same name makes the v2 CREATE TABLE fail.
    make_v1_database(path, extra_sql="CREATE TABLE bandwidth (junk TEXT);")

    with pytest.raises(StoreError, match="bandwidth"):
        await SqliteStore(path).open()

    assert pragma(path, "user_version") == 1
    with closing(sqlite3.connect(path)) as conn:
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "files_owner_created" not in indexes  # the earlier v2 statements rolled back too
    assert store_threads() == []


_HOLD_FRESH_FILE = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("CREATE TABLE other_process (a)")
print("held", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
"""


async def test_wal_switch_waits_for_another_process_instead_of_failing(tmp_path: Path) -> None:
    """Another process writing a fresh (rollback-journal) file makes SQLite refuse the WAL
    switch at once, busy_timeout or not; open() retries until that process is done."""
    path = tmp_path / "streambot.db"
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _HOLD_FRESH_FILE,
        str(path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert holder.stdout is not None
    assert holder.stdin is not None
    retried = threading.Event()

    class _Retries(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "busy switching to WAL" in record.getMessage():
                retried.set()

    handler = _Retries(logging.DEBUG)
    store_logger = logging.getLogger("streambot.sqlite_store")
    level = store_logger.level
    store_logger.addHandler(handler)
    store_logger.setLevel(logging.DEBUG)
    try:
        assert (await holder.stdout.readline()).strip() == b"held"
        store = SqliteStore(path)
        opening = asyncio.create_task(store.open())
        assert await asyncio.to_thread(retried.wait, 10), "open() never met the lock"
        assert not opening.done()
        holder.stdin.write(b"go\n")
        await holder.stdin.drain()
        await opening
        assert store.schema_version == LATEST_VERSION
        await store.close()
    finally:
        store_logger.removeHandler(handler)
        store_logger.setLevel(level)
        if holder.returncode is None:
            holder.stdin.close()
        await holder.wait()
    assert pragma(path, "journal_mode") == "wal"


def _open_fresh_databases(paths: list[str], barrier: Any, results: Any) -> None:
    """Child process: open each fresh database at the same moment as the other children."""

    async def open_one(path: str) -> str:
        store = SqliteStore(path)
        try:
            await store.open()
            return "ok"
        except StoreError as exc:
            return str(exc)
        finally:
            await store.close()

    for path in paths:
        barrier.wait()
        results.put(asyncio.run(open_one(path)))


def test_processes_opening_one_fresh_database_together_all_start(tmp_path: Path) -> None:
    """Three real processes open each of 20 new database files at the same moment: all 60
    opens succeed and every file ends up migrated, in WAL mode."""
    ctx = multiprocessing.get_context("spawn")
    paths = [str(tmp_path / f"race{i}" / "streambot.db") for i in range(20)]
    barrier = ctx.Barrier(3)
    results = ctx.Queue()
    children = [
        ctx.Process(target=_open_fresh_databases, args=(paths, barrier, results)) for _ in range(3)
    ]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=60) for _ in range(3 * len(paths))]
    for child in children:
        child.join(30)
    assert [c.exitcode for c in children] == [0, 0, 0]
    assert outcomes == ["ok"] * len(outcomes)
    for path in paths:
        assert pragma(Path(path), "journal_mode") == "wal"
        assert pragma(Path(path), "user_version") == LATEST_VERSION


async def test_garbage_file_raises_store_error(tmp_path: Path) -> None:
    """A file that is not a database surfaces as StoreError, not a raw sqlite3 exception."""
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not an sqlite database" * 100)

    with pytest.raises(StoreError):
        await SqliteStore(path).open()
    assert store_threads() == []


# -- bans ------------------------------------------------------------------------------


async def test_ban_unban(store: Store) -> None:
    """ban/unban report whether they changed anything and is_banned/banned_ids follow."""
    assert await store.banned_ids() == set()
    assert await store.ban(10, by=1, reason="spam") is True
    assert await store.ban(10, by=2) is False
    assert await store.ban(11, by=1) is True
    assert await store.is_banned(10)
    assert not await store.is_banned(12)
    assert await store.banned_ids() == {10, 11}

    assert await store.unban(10) is True
    assert await store.unban(10) is False
    assert not await store.is_banned(10)
    assert await store.banned_ids() == {11}


async def test_bans_persist_across_reopen(tmp_path: Path) -> None:
    """Bans written before close are still there after reopening the file."""
    path = tmp_path / "bans.db"
    async with await SqliteStore(path).open() as store:
        await store.ban(42, by=1, reason="abuse")
        await store.ban(43, by=1)
        await store.unban(43)

    async with await SqliteStore(path).open() as store:
        assert await store.banned_ids() == {42}
        assert await store.is_banned(42)


# -- files -----------------------------------------------------------------------------


async def test_add_find_count_files(store: Store) -> None:
    """add_file assigns ids and the file is found by owner+unique id and by message id."""
    saved = await store.add_file(make_file(owner_id=1, message_id=100, unique_id="a"))
    assert saved.id is not None
    assert saved == dataclasses.replace(make_file(1, 100, "a"), id=saved.id)

    assert await store.find_file(1, "a") == saved
    assert await store.find_file(2, "a") is None
    assert await store.file_by_message(100) == saved
    assert await store.file_by_message(101) is None

    await store.add_file(make_file(owner_id=1, message_id=101, unique_id="b"))
    await store.add_file(make_file(owner_id=2, message_id=102, unique_id="a"))
    assert await store.count_files(1) == 2
    assert await store.count_files(2) == 1
    assert await store.count_files(3) == 0


async def test_list_files_newest_first_with_pagination(store: Store) -> None:
    """list_files orders by created_at descending and pages with limit/offset."""
    for i, created in enumerate([5.0, 1.0, 9.0, 3.0, 7.0]):
        await store.add_file(
            make_file(owner_id=1, message_id=200 + i, unique_id=f"f{i}", created_at=created)
        )
    await store.add_file(make_file(owner_id=2, message_id=300, unique_id="other", created_at=100.0))

    everything = await store.list_files(1, limit=10)
    assert [f.created_at for f in everything] == [9.0, 7.0, 5.0, 3.0, 1.0]

    pages = [await store.list_files(1, limit=2, offset=o) for o in (0, 2, 4, 6)]
    assert [[f.unique_id for f in page] for page in pages] == [
        ["f2", "f4"],
        ["f0", "f3"],
        ["f1"],
        [],
    ]
    assert await store.list_files(1, limit=0) == []


async def test_list_files_rejects_negative_paging(store: Store) -> None:
    """A negative limit or offset is a ValueError rather than SQLite's 'no limit'."""
    with pytest.raises(ValueError, match="limit"):
        await store.list_files(1, limit=-1)
    with pytest.raises(ValueError, match="offset"):
        await store.list_files(1, limit=1, offset=-1)


async def test_duplicate_file_returns_existing_row(store: Store) -> None:
    """Re-adding an owner's unique_id returns the first row unchanged (first writer wins)."""
    first = await store.add_file(make_file(owner_id=1, message_id=100, unique_id="dup"))
    again = await store.add_file(make_file(owner_id=1, message_id=101, unique_id="dup"))

    assert again == first
    assert again.message_id == 100  # caller sees its own message 101 lost the race
    assert await store.count_files(1) == 1
    assert await store.file_by_message(101) is None


async def test_re_adding_a_revoked_file_moves_its_row_to_the_new_message(store: Store) -> None:
    """Once a file's message is revoked, adding it again gives the same row the new message."""
    first = await store.add_file(make_file(owner_id=1, message_id=100, unique_id="f"))
    other = await store.add_file(make_file(owner_id=2, message_id=200, unique_id="f"))
    assert await store.revoke(100, by=1)

    again = await store.add_file(make_file(owner_id=1, message_id=101, unique_id="f", created_at=9))
    assert (again.id, again.message_id, again.created_at) == (first.id, 101, 9)
    assert await store.find_file(1, "f") == again
    assert await store.file_by_message(101) == again
    assert await store.file_by_message(100) is None
    assert await store.is_revoked(100)  # the old links stay dead
    assert not await store.is_revoked(101)
    assert await store.count_files(1) == 1
    # Another owner's copy of the same Telegram file is untouched.
    assert await store.find_file(2, "f") == other
    # Not revoked any more: a further add is a duplicate again (first writer wins).
    assert (await store.add_file(make_file(1, 102, "f"))).message_id == 101


async def test_concurrent_duplicate_adds_agree(store: Store) -> None:
    """Concurrent adds of one file all resolve to the same stored row."""
    results = await asyncio.gather(
        *(store.add_file(make_file(1, 100 + i, "same")) for i in range(5))
    )
    assert len({r.id for r in results}) == 1
    assert await store.count_files(1) == 1


async def test_reused_message_id_raises_conflict(store: Store) -> None:
    """Storing a different file under an already-used message id raises ConflictError."""
    await store.add_file(make_file(owner_id=1, message_id=100, unique_id="a"))
    before = await store.count_files(1)
    with pytest.raises(ConflictError):
        await store.add_file(make_file(owner_id=1, message_id=100, unique_id="b"))
    assert issubclass(ConflictError, StoreError)
    assert await store.count_files(1) == before


async def test_add_file_rejects_preset_id(store: Store) -> None:
    """Passing a StoredFile that already has an id is a caller bug and raises ValueError."""
    saved = await store.add_file(make_file())
    with pytest.raises(ValueError, match="id"):
        await store.add_file(saved)


# -- revocations -----------------------------------------------------------------------


async def test_revoke_is_idempotent(store: Store, clock: ManualClock) -> None:
    """Revoking twice reports True then False and keeps the original timestamp."""
    clock.now = 50.0
    assert await store.revoke(100, by=1) is True
    clock.now = 60.0
    assert await store.revoke(100, by=2) is False

    assert await store.is_revoked(100)
    assert not await store.is_revoked(101)
    assert await store.revoked_since(0.0) == [(100, 50.0)]


async def test_revoked_since_is_inclusive_and_ordered(store: Store, clock: ManualClock) -> None:
    """revoked_since returns rows at or after the cutoff, oldest first."""
    for message_id, at in [(3, 30.0), (1, 10.0), (2, 20.0), (4, 20.0)]:
        clock.now = at
        await store.revoke(message_id, by=9)

    assert await store.revoked_since(0.0) == [(1, 10.0), (2, 20.0), (4, 20.0), (3, 30.0)]
    assert await store.revoked_since(20.0) == [(2, 20.0), (4, 20.0), (3, 30.0)]
    assert await store.revoked_since(30.5) == []


async def test_revoke_unrecorded_message(store: Store) -> None:
    """A message id with no files row can still be revoked (links only need the id)."""
    assert await store.revoke(999, by=1)
    assert await store.is_revoked(999)


# -- bandwidth -------------------------------------------------------------------------


async def test_add_bandwidth_sums_and_uses_one_transaction(store: Store) -> None:
    """Repeated keys accumulate across batches and each batch commits exactly once."""
    day = "2024-05-01"
    batch = {
        (day, "global", ""): 100,
        (day, "owner", "1"): 60,
        (day, "file", "100"): 40,
    }
    start = store.transactions
    await store.add_bandwidth(batch)
    assert store.transactions == start + 1
    await store.add_bandwidth({**batch, (day, "owner", "2"): 5})
    assert store.transactions == start + 2

    assert await store.bandwidth_total("global", "", day, day) == 200
    assert await store.bandwidth_total("owner", "1", day, day) == 120
    assert await store.bandwidth_total("owner", "2", day, day) == 5
    assert await store.bandwidth_total("file", "100", day, day) == 80
    assert await store.bandwidth_total("file", "101", day, day) == 0
    assert store.transactions == start + 2  # reads commit nothing


async def test_add_bandwidth_empty_batch_is_noop(store: Store) -> None:
    """An empty batch does not open a transaction."""
    start = store.transactions
    await store.add_bandwidth({})
    assert store.transactions == start


@pytest.mark.parametrize(
    ("key", "error"),
    [
        (("2024-5-1", "global", ""), "day must be"),
        (("20240501", "global", ""), "day must be"),
        (("2024-02-30", "global", ""), "day must be"),
        (("2024-05-01", "user", "1"), "scope must be"),
        (("2024-05-01", "global", "1"), "key must be"),
        (("2024-05-01", "owner", ""), "key must be"),
    ],
)
async def test_add_bandwidth_rejects_bad_keys(
    store: Store, key: tuple[str, str, str], error: str
) -> None:
    """Malformed day, unknown scope or a key/scope mismatch is a ValueError with no write."""
    start = store.transactions
    with pytest.raises(ValueError, match=error):
        await store.add_bandwidth({("2024-05-01", "global", ""): 1, key: 1})
    assert store.transactions == start
    assert await store.bandwidth_total("global", "", "2024-05-01", "2024-05-01") == 0


async def test_add_bandwidth_rejects_negative_bytes(store: Store) -> None:
    """Negative byte counts are refused before touching the database."""
    with pytest.raises(ValueError, match=">= 0"):
        await store.add_bandwidth({("2024-05-01", "global", ""): -1})


async def test_bandwidth_total_over_day_ranges(store: Store) -> None:
    """bandwidth_total sums an inclusive day range for one scope/key only."""
    await store.add_bandwidth(
        {
            ("2024-04-30", "owner", "1"): 1,
            ("2024-05-01", "owner", "1"): 10,
            ("2024-05-02", "owner", "1"): 100,
            ("2024-05-03", "owner", "1"): 1000,
            ("2024-05-02", "owner", "2"): 7,
            ("2024-05-02", "global", ""): 5000,
        }
    )
    total = store.bandwidth_total
    assert await total("owner", "1", "2024-05-01", "2024-05-02") == 110
    assert await total("owner", "1", "2024-05-02", "2024-05-02") == 100
    assert await total("owner", "1", "2024-01-01", "2024-12-31") == 1111
    assert await total("owner", "1", "2024-05-04", "2024-06-01") == 0
    assert await total("owner", "1", "2024-05-03", "2024-05-01") == 0  # empty range
    assert await total("owner", "2", "2024-05-01", "2024-05-31") == 7
    assert await total("global", "", "2024-05-01", "2024-05-31") == 5000


async def test_delete_bandwidth_before_in_batches(store: Store) -> None:
    """Deleting 2500 old rows with batch_size=1000 takes 3 transactions and keeps new rows."""
    old = {("2024-01-01", "file", str(i)): 1 for i in range(2500)}
    new = {("2024-02-01", "file", str(i)): 1 for i in range(10)}
    await store.add_bandwidth({**old, **new})

    start = store.transactions
    removed = await store.delete_bandwidth_before("2024-02-01", batch_size=1000)

    assert removed == 2500
    assert store.transactions - start == 3  # 1000 + 1000 + 500
    assert await store.bandwidth_total("file", "0", "2024-01-01", "2024-01-31") == 0
    remaining = [
        await store.bandwidth_total("file", str(i), "2000-01-01", "2999-12-31") for i in range(10)
    ]
    assert remaining == [1] * 10
    assert await store.delete_bandwidth_before("2024-02-01") == 0


async def test_delete_bandwidth_before_rejects_bad_batch_size(store: Store) -> None:
    """A non-positive batch size would never finish, so it is a ValueError."""
    with pytest.raises(ValueError, match="batch_size"):
        await store.delete_bandwidth_before("2024-01-01", batch_size=0)


# -- lifecycle / threading -------------------------------------------------------------


async def test_close_is_idempotent(db_path: Path | str) -> None:
    """close() may be called repeatedly, also concurrently, and stops the worker thread."""
    store = await SqliteStore(db_path).open()
    await asyncio.gather(store.close(), store.close())
    await store.close()
    assert store_threads() == []


CALLS_AFTER_CLOSE: list[tuple[str, Callable[[Store], Awaitable[object]]]] = [
    ("ban", lambda s: s.ban(1, by=2)),
    ("unban", lambda s: s.unban(1)),
    ("is_banned", lambda s: s.is_banned(1)),
    ("banned_ids", lambda s: s.banned_ids()),
    ("add_file", lambda s: s.add_file(make_file())),
    ("find_file", lambda s: s.find_file(1, "u1")),
    ("file_by_message", lambda s: s.file_by_message(1)),
    ("list_files", lambda s: s.list_files(1, limit=1)),
    ("count_files", lambda s: s.count_files(1)),
    ("revoke", lambda s: s.revoke(1, by=2)),
    ("is_revoked", lambda s: s.is_revoked(1)),
    ("revoked_since", lambda s: s.revoked_since(0.0)),
    ("add_bandwidth", lambda s: s.add_bandwidth({("2024-01-01", "global", ""): 1})),
    ("bandwidth_total", lambda s: s.bandwidth_total("global", "", "2024-01-01", "2024-01-02")),
    ("delete_bandwidth_before", lambda s: s.delete_bandwidth_before("2024-01-01")),
    ("worker_thread_name", lambda s: s.worker_thread_name()),
]


@pytest.mark.parametrize(("name", "call"), CALLS_AFTER_CLOSE, ids=[n for n, _ in CALLS_AFTER_CLOSE])
async def test_calls_after_close_raise_store_error(
    name: str, call: Callable[[Store], Awaitable[object]]
) -> None:
    """Every public query on a closed store raises StoreError, not an executor RuntimeError."""
    store = await SqliteStore(":memory:").open()
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await call(store)


async def test_queued_calls_finish_before_close(db_path: Path | str) -> None:
    """Calls already submitted when close() starts still complete normally (SQLite's queue)."""
    store = await SqliteStore(db_path).open()
    # gather starts its tasks in order, so all bans reach the executor before close() does.
    *banned, _ = await asyncio.gather(*(store.ban(i, by=0) for i in range(20)), store.close())
    assert banned == [True] * 20


async def test_sql_runs_only_on_store_thread(db_path: Path | str) -> None:
    """Every SQL statement of every API family executes on the single streambot-store thread."""
    store = await SqliteStore(db_path).open()
    seen: list[tuple[int, str]] = []

    def trace(_statement: str) -> None:
        seen.append((threading.get_ident(), threading.current_thread().name))

    await store.set_statement_trace(trace)
    await store.ban(1, by=2)
    await store.is_banned(1)
    await store.add_file(make_file())
    await store.list_files(1, limit=5)
    await store.revoke(100, by=2)
    await store.revoked_since(0.0)
    await store.add_bandwidth({("2024-01-01", "global", ""): 1})
    await store.bandwidth_total("global", "", "2024-01-01", "2024-01-01")
    await store.delete_bandwidth_before("2024-02-01")
    await store.set_statement_trace(None)

    assert seen, "trace callback never fired"
    threads = set(seen)
    assert len(threads) == 1
    ((ident, name),) = threads
    assert ident != threading.get_ident()  # not the event loop thread
    assert name.startswith("streambot-store")
    assert await store.worker_thread_name() == name
    await store.close()


async def test_a_retried_flush_is_counted_once(store: Store) -> None:
    """A batch re-sent with the same flush id (first answer lost) adds nothing the second time."""
    day = "2024-05-01"
    batch = {(day, "global", ""): 100, (day, "file", "7"): 100}
    assert await store.add_bandwidth(batch, flush_id="node-a:1") is True
    assert await store.add_bandwidth(batch, flush_id="node-a:1") is False
    assert await store.add_bandwidth(batch, flush_id="node-a:2") is True
    assert await store.bandwidth_total("global", "", day, day) == 200
    assert await store.bandwidth_total("file", "7", day, day) == 200


# -- agreement between nodes -------------------------------------------------------------


async def test_first_secret_is_adopted_and_another_refused(store: Store) -> None:
    """The first fingerprint is recorded; the same one passes again, a different one is refused."""
    await store.claim_link_secret("aa" * 32, fresh=False)
    await store.claim_link_secret("aa" * 32, fresh=False)
    with pytest.raises(LinkSecretMismatch, match="same LINK_SECRET"):
        await store.claim_link_secret("bb" * 32, fresh=False)
    with pytest.raises(LinkSecretMismatch):
        await store.claim_link_secret("bb" * 32, fresh=True)


async def test_new_secret_over_existing_files_is_refused(store: Store) -> None:
    """A database with files but no fingerprint refuses a freshly generated secret, not a given one."""
    await store.add_file(make_file())
    with pytest.raises(LinkSecretMismatch, match="1 file"):
        await store.claim_link_secret("cc" * 32, fresh=True)
    # Nothing was recorded by the refusal; the operator's given secret is then adopted.
    await store.claim_link_secret("dd" * 32, fresh=False)
    with pytest.raises(LinkSecretMismatch):
        await store.claim_link_secret("cc" * 32, fresh=False)


async def test_a_job_runs_once_per_period(store: Store) -> None:
    """claim_job: one winner per (job, period); a later period is claimable again, an older is not."""
    assert await store.claim_job("bandwidth_cleanup", "2024-05-01", "node-a") is True
    assert await store.claim_job("bandwidth_cleanup", "2024-05-01", "node-b") is False
    assert await store.claim_job("other_job", "2024-05-01", "node-b") is True
    assert await store.claim_job("bandwidth_cleanup", "2024-05-02", "node-b") is True
    assert await store.claim_job("bandwidth_cleanup", "2024-05-01", "node-a") is False


async def test_concurrent_job_claims_have_one_winner(store: Store) -> None:
    """Ten simultaneous claims of the same day: exactly one wins."""
    wins = await asyncio.gather(
        *(store.claim_job("daily", "2024-06-01", f"n{i}") for i in range(10))
    )
    assert sorted(wins) == [False] * 9 + [True]


async def test_bots_are_claimed_by_one_live_node_at_a_time(
    store: Store, clock: ManualClock
) -> None:
    """claim_bots: all or none; refreshed by the holder; free after release or STALE_SECONDS."""
    a, b, c = (Node(f"id-{n}", f"host:/{n}") for n in "abc")
    await store.claim_bots(["1", "2"], a)
    with pytest.raises(BotsInUse) as caught:
        await store.claim_bots(["3", "2"], b)
    assert [(x.bot_id, x.holder, x.place) for x in caught.value.conflicts] == [
        ("2", "id-a", "host:/a")
    ]
    assert "bot 2 by the node at host:/a" in str(caught.value)
    # The refusal took nothing: bot 3 is still free for a third node.
    await store.claim_bots(["3"], c)
    clock.now += STALE_SECONDS - 1
    # A refresh, or the same node restarted (same id) somewhere else: it takes its bots back.
    await store.claim_bots(["1", "2"], Node("id-a", "other-host:/a"))
    clock.now += STALE_SECONDS - 1
    with pytest.raises(BotsInUse) as caught:
        await store.claim_bots(["2"], b)  # refreshed 119 s ago: still live
    assert "bot 2 by the node at other-host:/a" in str(caught.value)
    await store.release_bots("id-a")
    await store.claim_bots(["2"], b)
    # Node c has not refreshed bot 3 for 238 s: it is taken as gone.
    await store.claim_bots(["1", "3"], b)
    with pytest.raises(BotsInUse) as caught:
        await store.claim_bots(["1", "2", "3"], c)
    assert [x.bot_id for x in caught.value.conflicts] == ["1", "2", "3"]


async def test_concurrent_claims_of_one_bot_have_one_winner(store: Store) -> None:
    """Ten nodes starting at once with the same worker bot: exactly one starts."""
    results = await asyncio.gather(
        *(store.claim_bots(["42", f"own-{i}"], Node(f"n{i}", f"host:/n{i}")) for i in range(10)),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["BotsInUse"] * 9 + ["NoneType"]


@pytest.mark.parametrize(
    ("stored", "fresh", "files", "problem"),
    [
        (None, False, 0, None),
        (None, True, 0, None),
        (None, False, 5, None),  # an upgrade: the kept secret is adopted
        (None, True, 5, "5 file"),  # the secret file was lost: refuse
        ("same", False, 5, None),
        ("same", True, 0, None),
        ("other", False, 0, "same LINK_SECRET"),
        ("other", True, 9, "same LINK_SECRET"),
    ],
)
def test_secret_problem_table(
    stored: str | None, fresh: bool, files: int, problem: str | None
) -> None:
    """Which secret a node may start with, against what the database already knows."""
    fp = "same"
    found = secret_problem(stored, fp, fresh=fresh, files=files)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found
        assert found.count(". ") == 0  # one sentence


def test_fingerprint_identifies_without_revealing_the_secret() -> None:
    """Same secret -> same fingerprint; different -> different; the secret is not in it."""
    secret = b"s3cret-" * 8
    fp = link_secret_fingerprint(secret)
    assert fp == link_secret_fingerprint(secret)
    assert fp != link_secret_fingerprint(secret + b"x")
    assert secret.hex() not in fp
    assert "s3cret" not in fp
    assert len(fp) == 64


def test_both_engines_have_the_same_schema_versions() -> None:
    """Versions count 1..N without gaps and every version has statements for both engines."""
    assert [m.version for m in MIGRATIONS] == list(range(1, latest_version() + 1))
    assert latest_version() == LATEST_VERSION
    for m in MIGRATIONS:
        assert m.sqlite
        assert m.postgres
        sqlite_names = [n for s in m.sqlite for n in re.findall(r"CREATE (?:TABLE|INDEX) (\w+)", s)]
        pg_names = [n for s in m.postgres for n in re.findall(r"CREATE (?:TABLE|INDEX) (\w+)", s)]
        assert sqlite_names == pg_names
