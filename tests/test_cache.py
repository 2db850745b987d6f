"""The one bounded cache: LRU order, the entry limit, staleness after the TTL, eviction callbacks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streambot.cache import BoundedTTLCache

from .clock import ManualClock


def test_cache_is_a_bounded_lru() -> None:
    """Past its limit the cache evicts the least recently used entry."""
    cache: BoundedTTLCache[str, int] = BoundedTTLCache(2, ttl=10, clock=ManualClock())
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == (1, True)  # "a" is now the most recently used
    cache.put("c", 3)
    assert len(cache) == 2
    assert cache.get("b") is None
    assert cache.get("a") == (1, True)
    assert cache.get("c") == (3, True)


def test_cache_entries_go_stale_after_the_ttl_and_are_swept_later() -> None:
    """An entry older than the TTL is still readable but stale; the sweep drops it at 2x TTL."""
    clock = ManualClock()
    cache: BoundedTTLCache[str, int] = BoundedTTLCache(4, ttl=10, clock=clock)
    cache.put("a", 1)
    clock.now += 9.9
    assert cache.get("a") == (1, True)
    clock.now += 0.2
    assert cache.get("a") == (1, False)
    assert cache.sweep() == 0
    clock.now += 10
    assert cache.sweep() == 1
    assert len(cache) == 0


def test_cache_rejects_a_zero_limit() -> None:
    """A cache must be able to hold at least one entry."""
    with pytest.raises(ValueError, match="limit"):
        BoundedTTLCache(0, ttl=1)


def test_eviction_is_reported_to_the_owner() -> None:
    """Each entry the limit pushes out is handed to on_evict; pop and sweep are not evictions."""
    evicted: list[tuple[str, int]] = []
    cache: BoundedTTLCache[str, int] = BoundedTTLCache(
        2, clock=ManualClock(), on_evict=lambda k, v: evicted.append((k, v))
    )
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("c", 3)
    assert evicted == [("a", 1)]
    assert cache.pop("b") == 2
    assert evicted == [("a", 1)]


def test_peek_does_not_change_recency() -> None:
    """peek reads without making the entry most recent, so it is still the next to go."""
    cache: BoundedTTLCache[str, int] = BoundedTTLCache(2, clock=ManualClock())
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.peek("a") == 1
    cache.put("c", 3)
    assert "a" not in cache
    assert cache.hits == 0


@given(st.integers(1, 8), st.lists(st.integers(0, 20), max_size=60))
def test_the_limit_always_holds_and_the_newest_entry_is_kept(limit: int, keys: list[int]) -> None:
    """Whatever is put, the cache never holds more than its limit and keeps the last key put."""
    cache: BoundedTTLCache[int, int] = BoundedTTLCache(limit, clock=ManualClock())
    for k in keys:
        cache.put(k, k)
        assert len(cache) <= limit
        assert cache.peek(k) == k
