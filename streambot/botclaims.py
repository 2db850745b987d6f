"""Which node uses which bot, for nodes that share one database.

Each bot token must be logged in by one StreamBot process only. Two processes with the main bot's
token split its updates between them, so each user's message reaches one of them at random. Two
processes with the same worker token both download with it, so Telegram counts two processes'
requests against one bot's limits and FloodWaits. The session lock (``sessionlock``) stops two
processes on one ``DATA_DIR``. Nodes with folders of their own can only see each other through the
database they share, so each node claims its bots there at start-up and refuses to start when a
live node holds one of them.

A claim is refreshed every :data:`REFRESH_SECONDS` and counts as live for :data:`STALE_SECONDS`.
A node that crashed therefore blocks its bots for at most that long, and the same node may take
them back at once. A node is its ``DATA_DIR``: a random id kept there (``DATA_DIR/node_id``), not
its host name or path, which containers share (every one has ``DATA_DIR=/data``, and with host
networking the host's name) and which change when a container is recreated. Bot ids are the
public part of a token (before the colon), never the secret.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from streambot.atomicfile import atomic_write
from streambot.private import FILE_MODE
from streambot.store import StoreError

log = logging.getLogger(__name__)

NODE_ID_FILE: Final = "node_id"
REFRESH_SECONDS: Final = 30.0
# Four refreshes: a node whose event loop stalls for a minute keeps its claim.
STALE_SECONDS: Final = 120.0


@dataclass(frozen=True, slots=True)
class BotClaim:
    """A row of the claims table: node ``holder`` (at ``place``) last confirmed ``bot_id`` at
    ``seen_at``."""

    bot_id: str
    holder: str
    place: str
    seen_at: float


@dataclass(frozen=True, slots=True)
class Node:
    """This node as the claims know it: ``id`` decides, ``place`` (host and DATA_DIR) is what
    another node's refusal shows the operator."""

    id: str
    place: str


class BotsInUse(StoreError):
    """Another live node holds some of this node's bots (its message names them and what to do)."""

    def __init__(self, conflicts: Sequence[BotClaim], now: float) -> None:
        held = "; ".join(
            f"bot {c.bot_id} by the node at {c.place} ({max(0, round(now - c.seen_at))} s ago)"
            for c in conflicts
        )
        super().__init__(
            f"another StreamBot node on this database uses the same bot token(s): {held}. Give "
            "every process bot tokens of its own (README: Several processes on one host); if "
            f"that node is gone, its claim expires {STALE_SECONDS:.0f} s after it was last seen"
        )
        self.conflicts = tuple(conflicts)


def this_node(data_dir: Path) -> Node:
    """This node: the id kept in ``DATA_DIR/node_id`` (made on first use), and where it runs.

    Blocking file work: call it in a thread. The session lock is held by then, so no other
    process makes the file at the same time.
    """
    path = data_dir / NODE_ID_FILE
    try:
        node_id = path.read_text().strip()
    except FileNotFoundError:
        node_id = ""
    if not node_id:
        node_id = secrets.token_hex(8)
        data_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(path, f"{node_id}\n".encode(), mode=FILE_MODE)
    return Node(node_id, f"{socket.gethostname()}:{data_dir.resolve()}")


def conflicts(
    rows: Iterable[BotClaim], holder: str, now: float, stale_after: float = STALE_SECONDS
) -> list[BotClaim]:
    """The claims that stop ``holder`` from taking these bots: another holder's, still live."""
    return sorted(
        (r for r in rows if r.holder != holder and now - r.seen_at < stale_after),
        key=lambda r: r.bot_id,
    )


class ClaimStore(Protocol):
    async def claim_bots(self, bot_ids: Sequence[str], node: Node) -> None: ...
    async def release_bots(self, node_id: str) -> None: ...


class BotClaims:
    """This node's claim on its bots: taken at start, refreshed by a job, released at stop."""

    def __init__(self, store: ClaimStore, bot_ids: Sequence[str], data_dir: Path) -> None:
        self._store = store
        self._bot_ids = tuple(dict.fromkeys(bot_ids))  # main and worker may be one bot
        self._data_dir = data_dir
        self._node: Node | None = None

    async def claim(self) -> None:
        """Take the bots, or raise :class:`BotsInUse` (and take none of them)."""
        self._node = await asyncio.to_thread(this_node, self._data_dir)
        await self._store.claim_bots(self._bot_ids, self._node)

    async def refresh(self) -> None:
        """Keep the claim live. A node that lost it (stalled past STALE_SECONDS while another
        node started with its bots) can only say so: both now run the same bots."""
        if self._node is None:
            return
        try:
            await self._store.claim_bots(self._bot_ids, self._node)
        except BotsInUse as exc:
            log.error("this node's bots were claimed by another node meanwhile: %s", exc)

    async def release(self) -> None:
        """Free the bots at a clean stop, so another node may take them without waiting."""
        if self._node is not None:
            await self._store.release_bots(self._node.id)
