"""Which node uses which bot, for nodes that share one database.

Each bot token must be logged in by one StreamBot process only. Two processes with the main bot's
token split its updates between them, so each user's message reaches one of them at random. Two
processes with the same worker token both download with it, so Telegram counts two processes'
requests against one bot's limits and FloodWaits. The session lock (``sessionlock``) stops two
processes on one ``DATA_DIR``. Nodes with folders of their own can only see each other through the
database they share, so each node claims its bots there at start-up and refuses to start when a
live node holds one of them.

A claim is refreshed every :data:`REFRESH_SECONDS` and counts as live for :data:`STALE_SECONDS`.
A node that crashed therefore blocks its bots for at most that long, and the same node (same host
and ``DATA_DIR``) may take them back at once. Bot ids are the public part of a token (before the
colon), never the secret.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from streambot.store import StoreError

log = logging.getLogger(__name__)

REFRESH_SECONDS: Final = 30.0
# Four refreshes: a node whose event loop stalls for a minute keeps its claim.
STALE_SECONDS: Final = 120.0


@dataclass(frozen=True, slots=True)
class BotClaim:
    """A row of the claims table: ``holder`` last confirmed ``bot_id`` at ``seen_at``."""

    bot_id: str
    holder: str
    seen_at: float


class BotsInUse(StoreError):
    """Another live node holds some of this node's bots (its message names them and what to do)."""

    def __init__(self, conflicts: Sequence[BotClaim], now: float) -> None:
        held = "; ".join(
            f"bot {c.bot_id} by the node at {c.holder} ({max(0, round(now - c.seen_at))} s ago)"
            for c in conflicts
        )
        super().__init__(
            f"another StreamBot node on this database uses the same bot token(s): {held}. Give "
            "every process bot tokens of its own (README: Several processes on one host); if "
            f"that node is gone, its claim expires {STALE_SECONDS:.0f} s after it was last seen"
        )
        self.conflicts = tuple(conflicts)


def holder_name(data_dir: Path) -> str:
    """This node's name in the claims: host and sessions folder, stable across restarts.

    Stable so that a node restarted after a crash takes its own bots back at once; the session
    lock guarantees one process per ``DATA_DIR``, so the name is never shared by two live nodes.
    """
    return f"{socket.gethostname()}:{data_dir.resolve()}"


def conflicts(
    rows: Iterable[BotClaim], holder: str, now: float, stale_after: float = STALE_SECONDS
) -> list[BotClaim]:
    """The claims that stop ``holder`` from taking these bots: another holder's, still live."""
    return sorted(
        (r for r in rows if r.holder != holder and now - r.seen_at < stale_after),
        key=lambda r: r.bot_id,
    )


class ClaimStore(Protocol):
    async def claim_bots(self, bot_ids: Sequence[str], holder: str) -> None: ...
    async def release_bots(self, holder: str) -> None: ...


class BotClaims:
    """This node's claim on its bots: taken at start, refreshed by a job, released at stop."""

    def __init__(self, store: ClaimStore, bot_ids: Sequence[str], holder: str) -> None:
        self._store = store
        self._bot_ids = tuple(dict.fromkeys(bot_ids))  # main and worker may be one bot
        self.holder = holder

    async def claim(self) -> None:
        """Take the bots, or raise :class:`BotsInUse` (and take none of them)."""
        await self._store.claim_bots(self._bot_ids, self.holder)

    async def refresh(self) -> None:
        """Keep the claim live. A node that lost it (stalled past STALE_SECONDS while another
        node started with its bots) can only say so: both now run the same bots."""
        try:
            await self._store.claim_bots(self._bot_ids, self.holder)
        except BotsInUse as exc:
            log.error("this node's bots were claimed by another node meanwhile: %s", exc)

    async def release(self) -> None:
        """Free the bots at a clean stop, so another node may take them without waiting."""
        await self._store.release_bots(self.holder)
