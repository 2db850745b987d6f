"""The store: StreamBot's durable shared state behind one interface, with two engines.

* SQLite (:class:`streambot.sqlite_store.SqliteStore`) is the embedded default: zero set-up, one file
  in DATA_DIR, and fine for several processes on one host (WAL needs shared memory, so never on a
  network filesystem).
* PostgreSQL (:class:`streambot.pg_store.PgStore`, selected by ``DATABASE_URL``) is for nodes on
  several machines; it also pushes revocations to every node as they happen.

Both hold the same tables at the same schema versions (:mod:`streambot.schema`) and behave the same
through :class:`Store`; ``tests/test_store.py`` runs one contract against both. Callers validate
nothing themselves: every method checks its arguments the same way on both engines (the helpers
below), so a bad key is the same ``ValueError`` everywhere.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from streambot.botclaims import Node  # botclaims' error type is a StoreError

__all__ = [
    "BANDWIDTH_SCOPES",
    "ConflictError",
    "LinkSecretMismatch",
    "SchemaTooNew",
    "Store",
    "StoreError",
    "StoredFile",
    "link_secret_fingerprint",
    "secret_problem",
]

BANDWIDTH_SCOPES: Final = frozenset({"global", "owner", "file"})
#: The ``meta`` row that holds the link-secret fingerprint.
FINGERPRINT_NAME: Final = "link_secret_fingerprint"
# A constant message keyed by the secret: the digest identifies the secret without revealing it
# (HMAC is a PRF), and no link token ever signs this text, so it cannot be replayed as one.
_FINGERPRINT_MESSAGE: Final = b"streambot link-secret fingerprint v1"

BandwidthBatch = Mapping[tuple[str, str, str], int]


class StoreError(Exception):
    """Any failure of the persistence layer; the driver's error is chained as the cause."""


class SchemaTooNew(StoreError):
    """The database was written by a newer StreamBot; opening it could lose data."""


class ConflictError(StoreError):
    """A write collided with a uniqueness rule that cannot be resolved automatically."""


class LinkSecretMismatch(StoreError):
    """This node's link secret is not the one the database's links are signed with."""


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file the bot copied into its storage channel on behalf of ``owner_id``."""

    owner_id: int
    message_id: int
    unique_id: str
    name: str
    size: int
    mime_type: str
    created_at: float
    id: int | None = None


class Store(Protocol):
    """What the application needs from its database; both engines implement exactly this."""

    @property
    def engine(self) -> str:
        """``"sqlite"`` or ``"postgresql"``, for logs and /stats."""
        ...

    @property
    def schema_version(self) -> int: ...

    @property
    def transactions(self) -> int:
        """Committed write transactions (migrations included) since open."""
        ...

    async def open(self) -> Store:
        """Connect, refuse a newer schema, migrate; returns the store itself."""
        ...

    async def close(self) -> None: ...

    async def ban(self, user_id: int, *, by: int, reason: str = "") -> bool: ...
    async def unban(self, user_id: int) -> bool: ...
    async def is_banned(self, user_id: int) -> bool: ...
    async def banned_ids(self) -> set[int]: ...

    async def add_file(self, f: StoredFile) -> StoredFile: ...
    async def find_file(self, owner_id: int, unique_id: str) -> StoredFile | None: ...
    async def file_by_message(self, message_id: int) -> StoredFile | None: ...
    async def list_files(
        self, owner_id: int, *, limit: int, offset: int = 0
    ) -> list[StoredFile]: ...
    async def count_files(self, owner_id: int) -> int: ...

    async def revoke(self, message_id: int, *, by: int) -> bool: ...
    async def is_revoked(self, message_id: int) -> bool: ...
    async def revoked_since(self, since: float) -> list[tuple[int, float]]: ...

    async def listen_revocations(self, on_revoked: Callable[[int], None]) -> None:
        """Call ``on_revoked(message_id)`` for revocations made by any node, until cancelled.

        PostgreSQL pushes them (LISTEN/NOTIFY) and, after its listening connection dropped,
        replays what was revoked meanwhile. SQLite has no push: this just waits, and the guard's
        TTL cache is what bounds staleness there.
        """
        ...

    async def add_bandwidth(self, batch: BandwidthBatch, *, flush_id: str | None = None) -> bool:
        """Add byte counts keyed ``(day, scope, key)`` in one transaction; False if already applied.

        With ``flush_id`` the batch is applied at most once: a retry of a flush whose first
        attempt committed (but whose answer was lost) changes nothing.
        """
        ...

    async def bandwidth_total(self, scope: str, key: str, first_day: str, last_day: str) -> int: ...
    async def delete_bandwidth_before(self, day: str, *, batch_size: int = 1000) -> int: ...

    async def claim_link_secret(self, fingerprint: str, *, fresh: bool) -> None:
        """Record or check the link-secret fingerprint; raise :class:`LinkSecretMismatch`."""
        ...

    async def claim_job(self, job: str, period: str, holder: str) -> bool:
        """True for exactly one caller per ``(job, period)`` across every node sharing the store."""
        ...

    async def claim_bots(self, bot_ids: Sequence[str], node: Node) -> None:
        """Claim ``bot_ids`` for ``node`` (or refresh its claim) in one transaction.

        Raises ``botclaims.BotsInUse`` and claims none of them when another node's claim on
        any is still live (``botclaims.conflicts``).
        """
        ...

    async def release_bots(self, node_id: str) -> None:
        """Drop every claim of node ``node_id`` (a clean stop)."""
        ...


def link_secret_fingerprint(secret: bytes) -> str:
    """A stable identifier of ``secret`` that is safe to store and compare (never the secret)."""
    return hmac.new(secret, _FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()


def secret_problem(stored: str | None, fingerprint: str, *, fresh: bool, files: int) -> str | None:
    """Why this node must not start with this secret (one sentence), or None if it may.

    ``stored`` is the fingerprint already in the database, ``fresh`` whether the secret was just
    generated (no LINK_SECRET and no DATA_DIR/link_secret), ``files`` how many files the database
    holds. A database that has never seen a fingerprint adopts this one, unless it already holds
    files and the secret is brand new: then the old secret was lost and every existing link would
    silently die.
    """
    if stored is not None:
        if hmac.compare_digest(stored, fingerprint):
            return None
        return (
            "LINK_SECRET is not the secret this database's links are signed with; give every "
            "node the same LINK_SECRET (or restore DATA_DIR/link_secret on a single node)"
        )
    if fresh and files > 0:
        return (
            f"the database already holds {files} file(s) but DATA_DIR/link_secret is missing, and "
            "a newly generated secret would break every existing link; restore "
            "DATA_DIR/link_secret or set LINK_SECRET to the old secret"
        )
    return None


# -- argument checks shared by both engines -----------------------------------------------


def check_day(day: str) -> date:
    """The ISO day ``day`` as a date; ValueError unless it is canonical ``YYYY-MM-DD``."""
    # Days compare as strings in SQLite, which is only correct for canonical ISO dates; the
    # round trip also rejects the compact "YYYYMMDD" form 3.11's parser accepts.
    try:
        parsed = date.fromisoformat(day)
        valid = parsed.isoformat() == day
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"day must be an ISO date 'YYYY-MM-DD', got {day!r}")
    return parsed


def check_scope_key(scope: str, key: str) -> None:
    if scope not in BANDWIDTH_SCOPES:
        raise ValueError(f"scope must be one of {sorted(BANDWIDTH_SCOPES)}, got {scope!r}")
    if (scope == "global") != (key == ""):
        raise ValueError(f"key must be empty exactly for the global scope, got {scope!r}/{key!r}")


def bandwidth_rows(batch: BandwidthBatch) -> list[tuple[str, str, str, int]]:
    """``(scope, key, day, bytes)`` rows of a valid batch, sorted by the table's primary key.

    Sorted because concurrent multi-row upserts that lock rows in different orders deadlock on
    PostgreSQL (measured: dozens of deadlocks per 150 unsorted flushes, none sorted).
    """
    rows = []
    for (day, scope, key), nbytes in batch.items():
        check_day(day)
        check_scope_key(scope, key)
        if nbytes < 0:
            raise ValueError(f"byte count must be >= 0, got {nbytes} for {(day, scope, key)}")
        rows.append((scope, key, day, nbytes))
    rows.sort()
    return rows


def check_paging(limit: int, offset: int) -> None:
    # SQLite treats a negative LIMIT as "no limit"; reject it rather than dump a table.
    if limit < 0 or offset < 0:
        raise ValueError(f"limit and offset must be >= 0, got {limit=} {offset=}")
