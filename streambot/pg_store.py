"""PostgreSQL engine of the store (``DATABASE_URL=postgresql://...``): state shared by nodes on many machines.

Same tables, versions and behaviour as the SQLite engine (:mod:`streambot.store` describes the
contract); what PostgreSQL adds is what several machines need:

* migrations hold a transaction-scoped advisory lock, so any number of nodes starting together on an
  empty database all succeed (without it, concurrent ``CREATE TABLE`` fails on the catalog);
* a revocation is committed together with a ``NOTIFY``, and every node ``LISTEN``s on its own
  connection: links die everywhere within milliseconds, not one guard TTL later. A listener whose
  connection dropped replays, once it is back, what was revoked meanwhile;
* counter flushes are one ``unnest`` UPSERT with rows in primary-key order (unsorted concurrent
  batches deadlock), made idempotent by a flush id recorded in the same transaction.

asyncpg is a native asyncio driver, so no query ever blocks the event loop; the pool is bounded by
DATABASE_POOL_SIZE.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Final, TypeVar
from urllib.parse import urlsplit

import asyncpg

from streambot.botclaims import BotClaim, BotsInUse, Node, conflicts
from streambot.event_wait import wait_set
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

__all__ = ["REVOCATION_CHANNEL", "PgStore", "describe_dsn"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: NOTIFY channel of revocations; the payload is the message id.
REVOCATION_CHANNEL: Final = "streambot_revocations"
#: application_name of the listening connection (operators and tests find it in pg_stat_activity).
LISTENER_NAME: Final = "streambot-listener"
# One constant per application for pg_advisory_xact_lock ("StreamBt" in ASCII).
_MIGRATION_LOCK: Final = 0x53747265616D4274
# revoked_at is stamped by the revoking node's clock; replaying from this much earlier than our
# own last healthy moment covers clock skew between nodes. Replays are harmless (idempotent).
_CATCHUP_SLACK_SECONDS: Final = 60.0

_DB_ERRORS: Final = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)

_FILE_COLUMNS: Final = "id, owner_id, message_id, unique_id, name, size, mime_type, created_at"


def describe_dsn(dsn: str) -> str:
    """``host:port/database`` of a DSN, for messages: never the user's password."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return "DATABASE_URL"
    return f"postgresql://{host}:{port}{parts.path or '/'}"


def _row_to_file(row: asyncpg.Record) -> StoredFile:
    return StoredFile(
        owner_id=row["owner_id"],
        message_id=row["message_id"],
        unique_id=row["unique_id"],
        name=row["name"],
        size=row["size"],
        mime_type=row["mime_type"],
        created_at=row["created_at"],
        id=row["id"],
    )


class PgStore:
    """The store on PostgreSQL: construct, then ``await store.open()``."""

    engine: Final = "postgresql"

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 5,
        clock: Callable[[], float] = time.time,
        timeout: float = 10.0,
        keepalive_seconds: float = 5.0,
        reconnect_max_seconds: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self._where = describe_dsn(dsn)
        self._pool_size = pool_size
        self._clock = clock
        self._timeout = timeout
        self._keepalive = keepalive_seconds
        self._reconnect_max = reconnect_max_seconds
        self._pool: asyncpg.Pool | None = None
        self._closed = False
        self._schema_version = 0
        self._transactions = 0
        #: Listener facts, for tests and /stats: connections made and notifications received.
        self.listener_connects = 0
        self.notifications = 0
        #: Set while the listening connection is established (LISTEN issued).
        self.listening = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        return self._schema_version

    @property
    def transactions(self) -> int:
        return self._transactions

    async def open(self) -> PgStore:
        """Connect the pool, refuse a newer schema, migrate under the advisory lock."""
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._timeout,
                command_timeout=self._timeout * 3,
            )
        except _DB_ERRORS as exc:
            raise StoreError(f"cannot connect to {self._where}: {_reason(exc)}") from exc
        except ValueError as exc:  # malformed DSN
            raise StoreError(f"DATABASE_URL is not a usable PostgreSQL URL: {exc}") from exc
        try:
            await self._migrate()
        except BaseException:
            await self.close()
            raise
        log.info("store %s open at schema version %s", self._where, self._schema_version)
        return self

    async def close(self) -> None:
        """Close the pool (waiting for queries in flight); idempotent."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), self._timeout)
            except (*_DB_ERRORS, asyncio.CancelledError):
                pool.terminate()
                raise
            finally:
                log.debug("store %s closed", self._where)

    async def __aenter__(self) -> PgStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _migrate(self) -> None:
        async with self._connection() as conn:
            current = await self._version(conn)
            self._check_version(current)
            for migration in MIGRATIONS:
                if current >= migration.version:
                    continue
                async with conn.transaction():
                    # Serialises every node's migration step; released at commit or rollback.
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                    await conn.execute(
                        "CREATE TABLE IF NOT EXISTS schema_version ("
                        " version integer PRIMARY KEY, applied_at double precision NOT NULL)"
                    )
                    # Re-read under the lock: another node may have migrated meanwhile.
                    current = await self._version(conn)
                    self._check_version(current)
                    if current >= migration.version:
                        continue
                    log.info(
                        "migrating %s from schema version %s to %s",
                        self._where,
                        current,
                        migration.version,
                    )
                    for statement in migration.postgres:
                        await conn.execute(statement)
                    await conn.execute(
                        "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
                        migration.version,
                        self._clock(),
                    )
                    current = migration.version
                self._transactions += 1
            self._schema_version = current

    @staticmethod
    async def _version(conn: asyncpg.Connection) -> int:
        exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
        if not exists:
            return 0
        return int(await conn.fetchval("SELECT COALESCE(max(version), 0) FROM schema_version"))

    def _check_version(self, found: int) -> None:
        known = latest_version()
        if found > known:
            raise SchemaTooNew(
                f"database {self._where} has schema version {found}, but this StreamBot "
                f"supports up to version {known}; upgrade StreamBot to open it"
            )

    # -- bans --------------------------------------------------------------------------

    async def ban(self, user_id: int, *, by: int, reason: str = "") -> bool:
        now = self._clock()
        status: str = await self._write(
            lambda c: c.execute(
                "INSERT INTO bans (user_id, banned_by, reason, banned_at) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (user_id) DO NOTHING",
                user_id,
                by,
                reason,
                now,
            )
        )
        return status == "INSERT 0 1"

    async def unban(self, user_id: int) -> bool:
        status: str = await self._write(
            lambda c: c.execute("DELETE FROM bans WHERE user_id = $1", user_id)
        )
        return status == "DELETE 1"

    async def is_banned(self, user_id: int) -> bool:
        row = await self._read(
            lambda c: c.fetchval("SELECT 1 FROM bans WHERE user_id = $1", user_id)
        )
        return row is not None

    async def banned_ids(self) -> set[int]:
        rows = await self._read(lambda c: c.fetch("SELECT user_id FROM bans"))
        return {int(r["user_id"]) for r in rows}

    # -- stored files ------------------------------------------------------------------

    async def add_file(self, f: StoredFile) -> StoredFile:
        """Record ``f``; same resolution of duplicates and revoked rows as the SQLite engine."""
        if f.id is not None:
            raise ValueError("StoredFile.id is assigned by the store; pass id=None")

        async def work(conn: asyncpg.Connection) -> StoredFile:
            try:
                new_id = await conn.fetchval(
                    "INSERT INTO files"
                    " (owner_id, message_id, unique_id, name, size, mime_type, created_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7)"
                    " ON CONFLICT (owner_id, unique_id) DO UPDATE SET"
                    " message_id = excluded.message_id, name = excluded.name,"
                    " size = excluded.size, mime_type = excluded.mime_type,"
                    " created_at = excluded.created_at"
                    " WHERE files.message_id IN (SELECT message_id FROM revocations)"
                    " RETURNING id",
                    f.owner_id,
                    f.message_id,
                    f.unique_id,
                    f.name,
                    f.size,
                    f.mime_type,
                    f.created_at,
                )
            except asyncpg.UniqueViolationError as exc:
                raise ConflictError(
                    f"cannot store file {f.unique_id!r} of owner {f.owner_id} as message "
                    f"{f.message_id}: {exc}"
                ) from exc
            if new_id is not None:
                return dataclasses.replace(f, id=new_id)
            existing = await conn.fetchrow(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE owner_id = $1 AND unique_id = $2",
                f.owner_id,
                f.unique_id,
            )
            return _row_to_file(existing)

        return await self._write(work)

    async def find_file(self, owner_id: int, unique_id: str) -> StoredFile | None:
        row = await self._read(
            lambda c: c.fetchrow(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE owner_id = $1 AND unique_id = $2",
                owner_id,
                unique_id,
            )
        )
        return None if row is None else _row_to_file(row)

    async def file_by_message(self, message_id: int) -> StoredFile | None:
        row = await self._read(
            lambda c: c.fetchrow(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE message_id = $1", message_id
            )
        )
        return None if row is None else _row_to_file(row)

    async def list_files(self, owner_id: int, *, limit: int, offset: int = 0) -> list[StoredFile]:
        check_paging(limit, offset)
        rows = await self._read(
            lambda c: c.fetch(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE owner_id = $1"
                " ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
                owner_id,
                limit,
                offset,
            )
        )
        return [_row_to_file(r) for r in rows]

    async def count_files(self, owner_id: int) -> int:
        count = await self._read(
            lambda c: c.fetchval("SELECT COUNT(*) FROM files WHERE owner_id = $1", owner_id)
        )
        return int(count)

    # -- link revocation ---------------------------------------------------------------

    async def revoke(self, message_id: int, *, by: int) -> bool:
        """Revoke and, in the same transaction, tell every listening node (NOTIFY at commit)."""
        now = self._clock()

        async def work(conn: asyncpg.Connection) -> bool:
            inserted = await conn.fetchval(
                "INSERT INTO revocations (message_id, revoked_by, revoked_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (message_id) DO NOTHING RETURNING message_id",
                message_id,
                by,
                now,
            )
            if inserted is None:
                return False
            await conn.execute("SELECT pg_notify($1, $2)", REVOCATION_CHANNEL, str(message_id))
            return True

        return await self._write(work)

    async def is_revoked(self, message_id: int) -> bool:
        row = await self._read(
            lambda c: c.fetchval("SELECT 1 FROM revocations WHERE message_id = $1", message_id)
        )
        return row is not None

    async def revoked_since(self, since: float) -> list[tuple[int, float]]:
        rows = await self._read(
            lambda c: c.fetch(
                "SELECT message_id, revoked_at FROM revocations WHERE revoked_at >= $1"
                " ORDER BY revoked_at, message_id",
                since,
            )
        )
        return [(int(r["message_id"]), float(r["revoked_at"])) for r in rows]

    async def listen_revocations(self, on_revoked: Callable[[int], None]) -> None:
        """Keep a LISTEN connection up until cancelled; replay what a drop made it miss.

        The connection is the pool's sibling, not a pooled one (a pooled connection would stop
        listening when released). It is checked every ``keepalive_seconds`` so a silently dead
        network path is noticed too, and re-made with capped exponential backoff.
        """
        backoff = 0.1
        healthy_at: float | None = None  # our clock when the listener was last known alive
        while True:
            try:
                conn = await asyncpg.connect(
                    self._dsn,
                    timeout=self._timeout,
                    # With the pid, an operator (or a test) can tell whose listener is whose.
                    server_settings={"application_name": f"{LISTENER_NAME} {os.getpid()}"},
                )
            except _DB_ERRORS as exc:
                log.warning("revocation listener cannot connect (%s); retrying", _reason(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._reconnect_max)
                continue
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _c, lost=lost: lost.set())

            def notified(_c: object, _pid: int, _channel: str, payload: str) -> None:
                self.notifications += 1
                try:
                    message_id = int(payload)
                except ValueError:
                    log.warning("ignoring a revocation notice with payload %r", payload[:40])
                    return
                on_revoked(message_id)

            try:
                await conn.add_listener(REVOCATION_CHANNEL, notified)
                self.listener_connects += 1
                self.listening.set()
                if healthy_at is not None:
                    # Revocations committed while nobody listened were notified to no one.
                    rows = await conn.fetch(
                        "SELECT message_id FROM revocations WHERE revoked_at >= $1",
                        healthy_at - _CATCHUP_SLACK_SECONDS,
                    )
                    for row in rows:
                        on_revoked(int(row["message_id"]))
                    log.info("revocation listener back; replayed %d revocation(s)", len(rows))
                backoff = 0.1
                healthy_at = self._clock()
                while not await wait_set(lost, self._keepalive):
                    await asyncio.wait_for(conn.fetchval("SELECT 1"), self._timeout)
                    healthy_at = self._clock()
                log.warning("revocation listener connection lost; reconnecting")
            except _DB_ERRORS as exc:
                log.warning("revocation listener failed (%s); reconnecting", _reason(exc))
            finally:
                self.listening.clear()
                if not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._reconnect_max)

    # -- bandwidth ---------------------------------------------------------------------

    async def add_bandwidth(self, batch: BandwidthBatch, *, flush_id: str | None = None) -> bool:
        """One sorted ``unnest`` UPSERT (``bytes = bytes + excluded.bytes``), at most once per id."""
        rows = bandwidth_rows(batch)
        if not rows:
            return True
        scopes = [r[0] for r in rows]
        keys = [r[1] for r in rows]
        days = [check_day(r[2]) for r in rows]
        counts = [r[3] for r in rows]
        now = self._clock()

        async def work(conn: asyncpg.Connection) -> bool:
            if flush_id is not None:
                fresh = await conn.fetchval(
                    "INSERT INTO bandwidth_flushes (flush_id, applied_at) VALUES ($1, $2)"
                    " ON CONFLICT (flush_id) DO NOTHING RETURNING 1",
                    flush_id,
                    now,
                )
                if fresh is None:
                    return False
            await conn.execute(
                "INSERT INTO bandwidth AS b (scope, key, day, bytes)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::bigint[])"
                " ON CONFLICT (scope, key, day) DO UPDATE SET bytes = b.bytes + excluded.bytes",
                scopes,
                keys,
                days,
                counts,
            )
            return True

        return await self._write(work)

    async def bandwidth_total(self, scope: str, key: str, first_day: str, last_day: str) -> int:
        check_scope_key(scope, key)
        first, last = check_day(first_day), check_day(last_day)
        total = await self._read(
            lambda c: c.fetchval(
                "SELECT COALESCE(SUM(bytes), 0) FROM bandwidth"
                " WHERE scope = $1 AND key = $2 AND day BETWEEN $3 AND $4",
                scope,
                key,
                first,
                last,
            )
        )
        return int(total)

    async def delete_bandwidth_before(self, day: str, *, batch_size: int = 1000) -> int:
        """Delete rows older than ``day`` in short transactions of ``batch_size`` rows."""
        cutoff = check_day(day)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        cutoff_ts = datetime.combine(cutoff, datetime.min.time(), UTC).timestamp()

        async def work(conn: asyncpg.Connection) -> int:
            await conn.execute("DELETE FROM bandwidth_flushes WHERE applied_at < $1", cutoff_ts)
            status = await conn.execute(
                "DELETE FROM bandwidth WHERE ctid IN"
                " (SELECT ctid FROM bandwidth WHERE day < $1 LIMIT $2)",
                cutoff,
                batch_size,
            )
            return int(status.rsplit(" ", 1)[1])

        removed = 0
        while True:
            deleted = await self._write(work)
            removed += deleted
            if deleted < batch_size:
                break
        log.info("deleted %s bandwidth rows before %s", removed, day)
        return removed

    # -- agreement between nodes -------------------------------------------------------

    async def claim_link_secret(self, fingerprint: str, *, fresh: bool) -> None:
        async def work(conn: asyncpg.Connection) -> str | None:
            select = "SELECT value FROM meta WHERE name = $1"
            stored = await conn.fetchval(select, FINGERPRINT_NAME)
            files = int(await conn.fetchval("SELECT COUNT(*) FROM files"))
            problem = secret_problem(stored, fingerprint, fresh=fresh, files=files)
            if problem is None and stored is None:
                # Two first nodes may race here; whichever commits first wins, the other
                # re-reads the winner's fingerprint and is refused if it differs.
                await conn.execute(
                    "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                    FINGERPRINT_NAME,
                    fingerprint,
                )
                stored = await conn.fetchval(select, FINGERPRINT_NAME)
                problem = secret_problem(stored, fingerprint, fresh=fresh, files=files)
            return problem

        problem = await self._write(work)
        if problem is not None:
            raise LinkSecretMismatch(problem)

    async def claim_job(self, job: str, period: str, holder: str) -> bool:
        now = self._clock()
        won = await self._write(
            lambda c: c.fetchval(
                "INSERT INTO job_leases AS l (job, period, holder, claimed_at)"
                " VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (job) DO UPDATE SET period = excluded.period,"
                " holder = excluded.holder, claimed_at = excluded.claimed_at"
                " WHERE l.period < excluded.period RETURNING 1",
                job,
                period,
                holder,
                now,
            )
        )
        return won is not None

    async def claim_bots(self, bot_ids: Sequence[str], node: Node) -> None:
        now = self._clock()
        ids = sorted(set(bot_ids))  # one lock order for every node: no deadlock between claims

        async def work(conn: asyncpg.Connection) -> None:
            # Rows that exist are locked by the SELECT; rows that do not are inserted first, so
            # two nodes claiming a new bot at once serialise on its primary key.
            await conn.executemany(
                "INSERT INTO bot_claims (bot_id, holder, place, seen_at) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (bot_id) DO NOTHING",
                [(b, node.id, node.place, now) for b in ids],
            )
            rows = await conn.fetch(
                "SELECT bot_id, holder, place, seen_at FROM bot_claims"
                " WHERE bot_id = ANY($1::text[]) FOR UPDATE",
                ids,
            )
            taken = conflicts((BotClaim(*row) for row in rows), node.id, now)
            if taken:
                raise BotsInUse(taken, now)  # rolls the transaction back: no bot is claimed
            await conn.execute(
                "UPDATE bot_claims SET holder = $2, place = $3, seen_at = $4"
                " WHERE bot_id = ANY($1::text[])",
                ids,
                node.id,
                node.place,
                now,
            )

        if ids:
            await self._write(work)

    async def release_bots(self, node_id: str) -> None:
        await self._write(lambda c: c.execute("DELETE FROM bot_claims WHERE holder = $1", node_id))

    # -- plumbing ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        pool = self._pool
        if pool is None or self._closed:
            raise StoreError(f"store {self._where} is closed")
        try:
            async with pool.acquire(timeout=self._timeout) as conn:
                yield conn
        except StoreError:
            raise
        except _DB_ERRORS as exc:
            raise StoreError(f"database error on {self._where}: {_reason(exc)}") from exc

    async def _read(self, fn: Callable[[asyncpg.Connection], Awaitable[_T]]) -> _T:
        async with self._connection() as conn:
            return await fn(conn)

    async def _write(self, fn: Callable[[asyncpg.Connection], Awaitable[_T]]) -> _T:
        async with self._connection() as conn, conn.transaction():
            result = await fn(conn)
        self._transactions += 1
        return result


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
