"""The link guard on a real store: revocations by another node, its cache's TTL and bound."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from streambot.bandwidth import Bandwidth, Quotas
from streambot.errors import LinkRevoked, QuotaExceeded
from streambot.guard import LinkGuard
from streambot.sqlite_store import SqliteStore
from streambot.store import Store, StoredFile

from .clock import ManualClock


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await SqliteStore(tmp_path / "shared.sqlite3").open()
    try:
        yield s
    finally:
        await s.close()


async def add(store: Store, message_id: int, owner_id: int) -> None:
    await store.add_file(
        StoredFile(
            owner_id=owner_id,
            message_id=message_id,
            unique_id=f"u{message_id}",
            name="f.bin",
            size=1,
            mime_type="application/octet-stream",
            created_at=1.0,
        )
    )


def guard_on(store: Store, clock: ManualClock, *, ttl: float = 1.0, limit: int = 100) -> LinkGuard:
    return LinkGuard(store, Bandwidth(store, Quotas()), ttl=ttl, limit=limit, clock=clock)


async def test_revocation_elsewhere_is_honoured_after_at_most_the_ttl(store: Store) -> None:
    """Another node revokes in the shared store: admitted while cached, refused from the TTL on."""
    clock = ManualClock()
    guard = guard_on(store, clock, ttl=1.0)
    await add(store, 7, owner_id=42)
    assert (await guard.admit(7)).owner_id == 42

    assert await store.revoke(7, by=1)  # as another node sharing the database would
    clock.now += 0.999
    await guard.admit(7)  # still the cached facts
    clock.now += 0.001
    with pytest.raises(LinkRevoked):
        await guard.admit(7)


async def test_zero_ttl_reads_the_store_on_every_check(store: Store) -> None:
    clock = ManualClock()
    guard = guard_on(store, clock, ttl=0.0)
    assert (await guard.admit(9)).owner_id is None  # never recorded: no owner, not revoked
    await store.revoke(9, by=1)
    with pytest.raises(LinkRevoked):
        await guard.admit(9)


async def test_facts_are_bounded_oldest_lookup_dropped_first(store: Store) -> None:
    clock = ManualClock()
    guard = guard_on(store, clock, limit=3)
    for message_id in range(1, 6):
        await add(store, message_id, owner_id=100 + message_id)
        await guard.admit(message_id)
    assert len(guard) == 3
    assert [m in guard for m in range(1, 6)] == [False, False, True, True, True]


async def test_owner_over_quota_is_refused(store: Store) -> None:
    """The guard also applies the owner's daily quota, from the same facts."""
    clock = ManualClock()
    bandwidth = Bandwidth(store, Quotas(per_owner_daily=10), clock=lambda: 1_700_000_000.0)
    guard = LinkGuard(store, bandwidth, clock=clock)
    await add(store, 3, owner_id=5)
    await guard.admit(3)
    bandwidth.count(3, 5, 11)
    with pytest.raises(QuotaExceeded):
        await guard.admit(3)
