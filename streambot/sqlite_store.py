"""SQLite engine of the store: the embedded default (one file, zero set-up).

The bot and the HTTP server live on one asyncio loop, and a slow disk must never stall
streaming. So every sqlite3 call runs on a single worker thread owned by the store: that
thread creates the only connection (``check_same_thread`` stays on, so a stray call from
any other thread fails loudly instead of corrupting state) and, having one worker,
serializes all statements without any extra locking. Several processes on one host may
share the file (WAL); SQLite itself says WAL does not work over a network filesystem.
"""

from __future__ import annotations

import asyncio
import calendar
import dataclasses
import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Final, TypeVar

from streambot.backoff import Backoff
from streambot.botclaims import BotClaim, BotsInUse, Node, conflicts
from streambot.private import private_file, tighten_all
from streambot.schema import MIGRATIONS, latest_version
from streambot.store import (
    FINGERPRINT_NAME,
    BandwidthBatch,
    ConflictError,
    LinkSecretMismatch,
    SchemaTooNew,
    StoredFile,
    StoreError,
    bandwidth_rows,
    check_day,
    check_paging,
    check_scope_key,
    secret_problem,
)

__all__ = ["MEMORY", "SqliteStore"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

MEMORY: Final = ":memory:"

#: How long SQLite waits for another process's lock, and the bound on retrying the WAL switch.
_BUSY_TIMEOUT_MS: Final = 5000
_WAL_RETRY_BASE_SECONDS: Final = 0.005
_WAL_RETRY_MAX_SECONDS: Final = 0.2


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY ("database is locked"), as opposed to a real failure."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (int(code) & 0xFF) == sqlite3.SQLITE_BUSY
    return "locked" in str(exc)


_FILE_COLUMNS: Final = "id, owner_id, message_id, unique_id, name, size, mime_type, created_at"


def _row_to_file(row: tuple[int, int, int, str, str, int, str, float]) -> StoredFile:
    file_id, owner_id, message_id, unique_id, name, size, mime_type, created_at = row
    return StoredFile(
        owner_id=owner_id,
        message_id=message_id,
        unique_id=unique_id,
        name=name,
        size=size,
        mime_type=mime_type,
        created_at=created_at,
        id=file_id,
    )


class SqliteStore:
    """Async facade over one SQLite database: ``SqliteStore(path)``, then ``await store.open()``.

    Construction does no I/O, so the composition root can build everything that depends on the
    store whole; the lifecycle entry opens it (connect and migrate) and closes it.
    """

    engine: Final = "sqlite"

    def __init__(self, path: Path | str, *, clock: Callable[[], float] = time.time) -> None:
        """``":memory:"`` gives a private in-memory database, for tests. ``clock`` stamps
        bans and revocations; tests inject a fake one instead of sleeping."""
        self._path = str(path)
        # No thread starts until the first job is submitted (by open()).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streambot-store")
        self._clock = clock
        self._opened = False
        # Touched only from the executor thread (enforced by check_same_thread).
        self._conn: sqlite3.Connection | None = None
        # Written only from the executor thread; plain int reads are safe elsewhere.
        self._schema_version = 0
        self._transactions = 0
        # Set once close() starts; also lets concurrent close() calls wait for the first.
        self._closing: asyncio.Event | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> SqliteStore:
        """Open (creating if needed) and migrate the database; returns the store itself.

        A store is opened once; after a failed open it is closed and cannot be reused.
        """
        if self._opened or self._closing is not None:
            raise StoreError(f"store {self._path} was already opened")
        self._opened = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._connect)
        except BaseException:
            # Without this a failed open (bad file, SchemaTooNew, cancellation) would leak
            # the worker thread and possibly a half-open connection.
            await self.close()
            raise
        return self

    async def close(self) -> None:
        """Close the connection on its own thread, then stop the worker; idempotent."""
        if self._closing is not None:
            await self._closing.wait()
            return
        self._closing = asyncio.Event()
        if not self._opened:
            # Never opened (start-up failed earlier): no thread, no connection to close.
            self._executor.shutdown(wait=False)
            self._closing.set()
            return
        loop = asyncio.get_running_loop()
        try:
            # Queued behind any in-flight work, so already-accepted calls finish first.
            # Shielded: cancelling close() must not cancel the queued job, or the
            # connection would never be closed.
            await asyncio.shield(loop.run_in_executor(self._executor, self._disconnect))
        finally:
            # Normally the close job is done and this join is near-instant; if close()
            # was cancelled, wait=True is what lets the still-pending job run to the end.
            self._executor.shutdown(wait=True)
            self._closing.set()
        logger.debug("store %s closed", self._path)

    async def __aenter__(self) -> SqliteStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def schema_version(self) -> int:
        """The ``PRAGMA user_version`` the database is at after migrations."""
        return self._schema_version

    @property
    def transactions(self) -> int:
        """Number of committed write transactions (migrations included) since open."""
        return self._transactions

    # -- bans --------------------------------------------------------------------------

    async def ban(self, user_id: int, *, by: int, reason: str = "") -> bool:
        """Ban ``user_id``; True if newly banned (an existing ban keeps its reason)."""
        now = self._clock()

        def work(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT INTO bans (user_id, banned_by, reason, banned_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (user_id) DO NOTHING",
                (user_id, by, reason, now),
            )
            return cur.rowcount == 1

        return await self._write(work)

    async def unban(self, user_id: int) -> bool:
        """Lift a ban; True if the user was banned."""

        def work(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM bans WHERE user_id = ?", (user_id,)).rowcount == 1

        return await self._write(work)

    async def is_banned(self, user_id: int) -> bool:
        """Whether ``user_id`` is currently banned."""

        def work(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT 1 FROM bans WHERE user_id = ?", (user_id,)).fetchone()
            return row is not None

        return await self._run(work)

    async def banned_ids(self) -> set[int]:
        """All banned user ids, e.g. to warm an in-memory cache at startup."""

        def work(conn: sqlite3.Connection) -> set[int]:
            return {user_id for (user_id,) in conn.execute("SELECT user_id FROM bans")}

        return await self._run(work)

    # -- stored files ------------------------------------------------------------------

    async def add_file(self, f: StoredFile) -> StoredFile:
        """Record ``f`` and return it with its row id.

        If the owner already stored the same Telegram file (same ``unique_id``), the
        existing row is returned unchanged instead of raising: two concurrent uploads of
        one file then both end up with the same canonical link, and a caller can tell it
        lost the race because the returned ``message_id`` differs from its own (its extra
        storage message is redundant). The exception is an existing row whose message was
        revoked: sending the file again is how an owner gets a fresh link, so the row (same
        id) moves to ``f``'s message and details, and the owner can list and revoke it again.
        Reusing a ``message_id`` for a different file is a real bug and raises
        :class:`ConflictError`.
        """
        if f.id is not None:
            raise ValueError("StoredFile.id is assigned by the store; pass id=None")

        def work(conn: sqlite3.Connection) -> StoredFile:
            try:
                row = conn.execute(
                    "INSERT INTO files"
                    " (owner_id, message_id, unique_id, name, size, mime_type, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (owner_id, unique_id) DO UPDATE SET"
                    " message_id = excluded.message_id, name = excluded.name,"
                    " size = excluded.size, mime_type = excluded.mime_type,"
                    " created_at = excluded.created_at"
                    " WHERE files.message_id IN (SELECT message_id FROM revocations)"
                    " RETURNING id",
                    (
                        f.owner_id,
                        f.message_id,
                        f.unique_id,
                        f.name,
                        f.size,
                        f.mime_type,
                        f.created_at,
                    ),
                ).fetchone()
            except sqlite3.IntegrityError as exc:
                raise ConflictError(
                    f"cannot store file {f.unique_id!r} of owner {f.owner_id} as message "
                    f"{f.message_id}: {exc}"
                ) from exc
            if row is not None:
                return dataclasses.replace(f, id=row[0])
            existing = conn.execute(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE owner_id = ? AND unique_id = ?",
                (f.owner_id, f.unique_id),
            ).fetchone()
            # Same transaction as the failed insert, so the conflicting row is still there.
            return _row_to_file(existing)

        return await self._write(work)

    async def find_file(self, owner_id: int, unique_id: str) -> StoredFile | None:
        """The file ``owner_id`` stored with Telegram's ``unique_id``, if any."""

        def work(conn: sqlite3.Connection) -> StoredFile | None:
            row = conn.execute(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE owner_id = ? AND unique_id = ?",
                (owner_id, unique_id),
            ).fetchone()
            return None if row is None else _row_to_file(row)

        return await self._run(work)

    async def file_by_message(self, message_id: int) -> StoredFile | None:
        """The file carried by storage message ``message_id``, if recorded."""

        def work(conn: sqlite3.Connection) -> StoredFile | None:
            row = conn.execute(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE message_id = ?", (message_id,)
            ).fetchone()
            return None if row is None else _row_to_file(row)

        return await self._run(work)

    async def list_files(self, owner_id: int, *, limit: int, offset: int = 0) -> list[StoredFile]:
        """One page of ``owner_id``'s files, newest first (ties broken by newest row)."""
        check_paging(limit, offset)

        def work(conn: sqlite3.Connection) -> list[StoredFile]:
            rows = conn.execute(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE owner_id = ?"
                " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
                (owner_id, limit, offset),
            ).fetchall()
            return [_row_to_file(row) for row in rows]

        return await self._run(work)

    async def count_files(self, owner_id: int) -> int:
        """How many files ``owner_id`` has stored."""

        def work(conn: sqlite3.Connection) -> int:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM files WHERE owner_id = ?", (owner_id,)
            ).fetchone()
            return int(count)

        return await self._run(work)

    # -- link revocation ---------------------------------------------------------------

    async def revoke(self, message_id: int, *, by: int) -> bool:
        """Kill every link to storage message ``message_id``; True if newly revoked.

        Re-revoking keeps the original timestamp so pollers do not see it twice.
        """
        now = self._clock()

        def work(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT INTO revocations (message_id, revoked_by, revoked_at) VALUES (?, ?, ?)"
                " ON CONFLICT (message_id) DO NOTHING",
                (message_id, by, now),
            )
            return cur.rowcount == 1

        return await self._write(work)

    async def is_revoked(self, message_id: int) -> bool:
        """Whether links to ``message_id`` have been revoked."""

        def work(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT 1 FROM revocations WHERE message_id = ?", (message_id,)
            ).fetchone()
            return row is not None

        return await self._run(work)

    async def revoked_since(self, since: float) -> list[tuple[int, float]]:
        """``(message_id, revoked_at)`` for revocations at or after ``since``, oldest first.

        Inclusive on purpose: a poller that passes the last ``revoked_at`` it saw may get
        that row again (harmless, revocation is idempotent) but cannot miss another row
        stamped with the same time after its previous poll.
        """

        def work(conn: sqlite3.Connection) -> list[tuple[int, float]]:
            rows = conn.execute(
                "SELECT message_id, revoked_at FROM revocations WHERE revoked_at >= ?"
                " ORDER BY revoked_at, message_id",
                (since,),
            ).fetchall()
            return [(int(message_id), float(at)) for message_id, at in rows]

        return await self._run(work)

    async def listen_revocations(self, on_revoked: Callable[[int], None]) -> None:
        """No push on SQLite: wait until cancelled (the guard's TTL bounds staleness)."""
        await asyncio.Event().wait()

    # -- bandwidth ---------------------------------------------------------------------

    async def add_bandwidth(self, batch: BandwidthBatch, *, flush_id: str | None = None) -> bool:
        """Add byte counts keyed by ``(day, scope, key)`` in a single transaction.

        Callers accumulate in memory and flush periodically, so one flush costs one
        fsync regardless of how many keys it touches. An empty batch is a no-op (and
        takes no write lock). With ``flush_id``, a batch already applied is skipped (False).
        """
        rows = bandwidth_rows(batch)
        if not rows:
            return True
        now = self._clock()

        def work(conn: sqlite3.Connection) -> bool:
            if flush_id is not None:
                cur = conn.execute(
                    "INSERT INTO bandwidth_flushes (flush_id, applied_at) VALUES (?, ?)"
                    " ON CONFLICT (flush_id) DO NOTHING",
                    (flush_id, now),
                )
                if cur.rowcount == 0:
                    return False
            conn.executemany(
                "INSERT INTO bandwidth (scope, key, day, bytes) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (scope, key, day) DO UPDATE SET bytes = bytes + excluded.bytes",
                rows,
            )
            return True

        return await self._write(work)

    async def bandwidth_total(self, scope: str, key: str, first_day: str, last_day: str) -> int:
        """Bytes recorded for ``(scope, key)`` from ``first_day`` to ``last_day`` inclusive."""
        check_scope_key(scope, key)
        check_day(first_day)
        check_day(last_day)

        def work(conn: sqlite3.Connection) -> int:
            (total,) = conn.execute(
                "SELECT COALESCE(SUM(bytes), 0) FROM bandwidth"
                " WHERE scope = ? AND key = ? AND day BETWEEN ? AND ?",
                (scope, key, first_day, last_day),
            ).fetchone()
            return int(total)

        return await self._run(work)

    async def delete_bandwidth_before(self, day: str, *, batch_size: int = 1000) -> int:
        """Delete rows older than ``day`` (exclusive); returns how many were removed.

        Works in batches of ``batch_size``, each its own short transaction, so retention
        cleanup never holds the write lock (or the single worker) long enough to stall
        request-path queries queued behind it.
        """
        # Flush ids only guard retries, which happen within minutes; they go with the rows.
        cutoff_ts = float(calendar.timegm(check_day(day).timetuple()))
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")

        def work(conn: sqlite3.Connection) -> int:
            conn.execute("DELETE FROM bandwidth_flushes WHERE applied_at < ?", (cutoff_ts,))
            return conn.execute(
                "DELETE FROM bandwidth WHERE rowid IN"
                " (SELECT rowid FROM bandwidth WHERE day < ? LIMIT ?)",
                (day, batch_size),
            ).rowcount

        removed = 0
        while True:
            deleted = await self._write(work)
            removed += deleted
            if deleted < batch_size:
                break
            # Let other tasks enqueue their statements between batches.
            await asyncio.sleep(0)
        logger.info("deleted %s bandwidth rows before %s", removed, day)
        return removed

    # -- agreement between nodes -------------------------------------------------------

    async def claim_link_secret(self, fingerprint: str, *, fresh: bool) -> None:
        """Record this secret's fingerprint, or refuse it (see :func:`secret_problem`)."""

        def work(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT value FROM meta WHERE name = ?", (FINGERPRINT_NAME,))
            found = row.fetchone()
            (files,) = conn.execute("SELECT COUNT(*) FROM files").fetchone()
            stored = None if found is None else str(found[0])
            problem = secret_problem(stored, fingerprint, fresh=fresh, files=int(files))
            if problem is None and stored is None:
                conn.execute(
                    "INSERT INTO meta (name, value) VALUES (?, ?)", (FINGERPRINT_NAME, fingerprint)
                )
            return problem

        problem = await self._write(work)
        if problem is not None:
            raise LinkSecretMismatch(problem)

    async def claim_job(self, job: str, period: str, holder: str) -> bool:
        """True for the first caller per ``(job, period)``; periods must sort in time order."""
        now = self._clock()

        def work(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "INSERT INTO job_leases (job, period, holder, claimed_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (job) DO UPDATE SET period = excluded.period,"
                " holder = excluded.holder, claimed_at = excluded.claimed_at"
                " WHERE job_leases.period < excluded.period RETURNING job",
                (job, period, holder, now),
            ).fetchone()
            return row is not None

        return await self._write(work)

    async def claim_bots(self, bot_ids: Sequence[str], node: Node) -> None:
        now = self._clock()
        ids = sorted(set(bot_ids))

        def work(conn: sqlite3.Connection) -> None:
            # BEGIN IMMEDIATE (see _transaction) serialises this with every other node's claim.
            marks = ", ".join("?" * len(ids))  # only placeholders go into the text
            rows = conn.execute(
                f"SELECT bot_id, holder, place, seen_at FROM bot_claims WHERE bot_id IN ({marks})",
                ids,
            ).fetchall()
            taken = conflicts((BotClaim(*row) for row in rows), node.id, now)
            if taken:
                raise BotsInUse(taken, now)  # rolls the transaction back: no bot is claimed
            conn.executemany(
                "INSERT INTO bot_claims (bot_id, holder, place, seen_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (bot_id) DO UPDATE SET holder = excluded.holder,"
                " place = excluded.place, seen_at = excluded.seen_at",
                [(b, node.id, node.place, now) for b in ids],
            )

        if ids:
            await self._write(work)

    async def release_bots(self, node_id: str) -> None:
        await self._write(
            lambda conn: conn.execute("DELETE FROM bot_claims WHERE holder = ?", (node_id,))
        )

    # -- diagnostics -------------------------------------------------------------------

    async def worker_thread_name(self) -> str:
        """Name of the thread that runs this store's SQL (via the same path as queries)."""
        return await self._run(lambda _conn: threading.current_thread().name)

    async def set_statement_trace(self, callback: Callable[[str], None] | None) -> None:
        """Call ``callback`` with each SQL statement executed, or stop tracing with None.

        The callback runs on the store's worker thread, which is what makes it useful for
        debugging slow queries and for proving that no SQL runs on the event loop.
        """

        def work(conn: sqlite3.Connection) -> None:
            conn.set_trace_callback(callback)

        await self._run(work)

    # -- plumbing ----------------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn(connection)`` on the worker thread and return (or raise) its result."""
        if self._closing is not None:
            raise StoreError(f"store {self._path} is closed")
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._executor, self._call, fn)
        except RuntimeError as exc:  # executor already shut down
            raise StoreError(f"store {self._path} is closed") from exc
        return await future

    async def _write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Like :meth:`_run`, but inside one write transaction."""
        return await self._run(lambda conn: self._transaction(conn, fn))

    def _call(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Worker-thread side of :meth:`_run`: hand over the connection, wrap sqlite errors."""
        conn = self._conn
        if conn is None:
            raise StoreError(f"store {self._path} is closed")
        try:
            return fn(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite error on {self._path}: {exc}") from exc

    def _transaction(self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        # IMMEDIATE takes the write lock up front: a deferred transaction that reads and
        # then writes can fail with SQLITE_BUSY mid-way if another process (e.g. a second
        # node on the same file) wrote in between, while this one just waits busy_timeout.
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._transactions += 1
        return result

    def _connect(self) -> None:
        """Worker thread: create the connection, check the version, apply migrations."""
        if self._path != MEMORY:
            try:
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
                # Owners, bans and revocations: owner-only (SQLite copies the mode to -wal/-shm).
                private_file(Path(self._path))
                tighten_all(Path(self._path).parent, Path(self._path).name + "-*")
            except OSError as exc:
                raise StoreError(f"cannot create directory for {self._path}: {exc}") from exc
        try:
            # isolation_level=None: the module must not open transactions implicitly; every
            # write transaction is an explicit BEGIN IMMEDIATE ... COMMIT in _transaction().
            conn = sqlite3.connect(self._path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self._path}: {exc}") from exc
        self._conn = conn  # set first so a failure below is cleaned up by close()
        self._call(self._configure_and_migrate)
        logger.info("store %s open at schema version %s", self._path, self._schema_version)

    def _configure_and_migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        # Check before switching to WAL so a newer build's file is not modified at all.
        self._check_version(self._user_version(conn))
        self._switch_to_wal(conn)
        # NORMAL is durable against application crashes in WAL mode; only a power loss
        # can drop the last commits, which is acceptable for counters and caches.
        conn.execute("PRAGMA synchronous = NORMAL")
        for target in range(1, latest_version() + 1):
            if self._user_version(conn) >= target:
                continue  # up to date: don't take the write lock for nothing
            self._transaction(conn, functools.partial(self._migrate_to, target=target))
        self._schema_version = self._user_version(conn)

    def _switch_to_wal(self, conn: sqlite3.Connection) -> None:
        """``PRAGMA journal_mode = WAL``, retried while another process holds the file.

        Switching a fresh (rollback-journal) file to WAL reads it under a SHARED lock and then
        needs EXCLUSIVE. When two processes do that at the same moment, SQLite sees a deadlock
        and answers SQLITE_BUSY at once, without calling the busy handler, so busy_timeout
        cannot help: several nodes starting together on a new database would lose the race.
        Retrying after the other process has finished is all it takes (it leaves the file
        in WAL, where the pragma is a no-op).
        """
        backoff = Backoff(_WAL_RETRY_BASE_SECONDS, maximum=_WAL_RETRY_MAX_SECONDS, jitter=0.5)
        deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
        attempt = 0
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                attempt += 1
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
                logger.debug("%s busy switching to WAL (try %d): %s", self._path, attempt, exc)
                # This runs on the store's own worker thread, before the store is usable:
                # a blocking sleep stalls nothing else.
                time.sleep(backoff.delay(attempt))

    def _migrate_to(self, conn: sqlite3.Connection, target: int) -> None:
        # Re-read inside the write lock: another process may have migrated meanwhile.
        current = self._user_version(conn)
        self._check_version(current)
        if current >= target:
            return
        logger.info("migrating %s from schema version %s to %s", self._path, current, target)
        for statement in MIGRATIONS[target - 1].sqlite:
            conn.execute(statement)
        # PRAGMA takes no parameters; target is an int from range(), so this is safe.
        conn.execute(f"PRAGMA user_version = {int(target)}")

    def _check_version(self, found: int) -> None:
        known = latest_version()
        if found > known:
            raise SchemaTooNew(
                f"database {self._path} has schema version {found}, but this StreamBot "
                f"supports up to version {known}; upgrade StreamBot to open it"
            )

    @staticmethod
    def _user_version(conn: sqlite3.Connection) -> int:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        return int(version)

    def _disconnect(self) -> None:
        """Worker thread: close the connection (a no-op if open never got that far)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.close()
        except sqlite3.Error as exc:
            raise StoreError(f"error closing {self._path}: {exc}") from exc
