"""The link guard: before a download starts, is the file revoked, and is its owner over quota?

Revocations live in the shared store so every node that shares it honours them. Each node caches
what it learned per message for ``ttl`` seconds (CACHE_GUARD_TTL, default 1 s), which bounds how
long a revoked link keeps starting downloads anywhere to that TTL while costing at most one small
query per file per TTL. At most ``limit`` (CACHE_GUARD_LIMIT) messages are remembered, least
recently looked up dropped first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from streambot.admission import Admitted
from streambot.bandwidth import Bandwidth
from streambot.cache import BoundedTTLCache
from streambot.errors import LinkRevoked
from streambot.store import Store


@dataclass(frozen=True, slots=True)
class FileFacts:
    owner_id: int | None
    revoked: bool


class LinkGuard:
    """Admission check for downloads: revocation and quota, and the owner to bill."""

    def __init__(
        self,
        store: Store,
        bandwidth: Bandwidth,
        *,
        ttl: float = 1.0,
        limit: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._bandwidth = bandwidth
        self.limit = limit
        self._facts: BoundedTTLCache[int, FileFacts] = BoundedTTLCache(limit, ttl, clock)

    def __len__(self) -> int:
        return len(self._facts)

    async def facts(self, message_id: int) -> FileFacts:
        cached = self._facts.get(message_id)
        if cached is not None and cached[1]:
            return cached[0]
        stored = await self._store.file_by_message(message_id)
        revoked = await self._store.is_revoked(message_id)
        facts = FileFacts(stored.owner_id if stored else None, revoked)
        self._facts.put(message_id, facts)
        return facts

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._facts

    def forget(self, message_id: int) -> None:
        self._facts.pop(message_id)

    async def admit(self, message_id: int) -> Admitted:
        """Refuse a revoked file or one whose owner is over quota; else name the owner.

        The owner goes with the stream (``Admitted``), so its bytes are billed to the owner
        even after this cache has long forgotten the message.
        """
        facts = await self.facts(message_id)
        if facts.revoked:
            raise LinkRevoked(f"message {message_id} was revoked")
        await self._bandwidth.check(facts.owner_id)
        return Admitted(facts.owner_id)
