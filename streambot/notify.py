"""Telling the admins: one message to each admin through the main bot, never raising."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from pyrogram import Client
from pyrogram.errors import RPCError

log = logging.getLogger(__name__)

#: What alerting code depends on: an async callable taking the text (AdminNotifier is one).
Notify = Callable[[str], Awaitable[Any]]


class AdminNotifier:
    """Sends operator alerts (a worker lost channel access, memory critical, a client failed)."""

    def __init__(self, client: Callable[[], Client], admins: Iterable[int]) -> None:
        self._client = client
        self.admins = tuple(admins)
        self.sent = 0

    async def unreachable(self) -> list[int]:
        """Admins the bot cannot message: Telegram does not let a bot start a conversation, so
        an admin who never pressed Start in a chat with the bot gets no alert. Checked by
        resolving each id (users.getUsers), which only succeeds for users the bot has met;
        a network failure lists nobody (that is not the admin's problem)."""
        missing = []
        for admin in self.admins:
            try:
                await self._client().resolve_peer(admin)
            except (RPCError, KeyError, ValueError):
                missing.append(admin)
            except OSError:
                return []
        return missing

    async def __call__(self, text: str) -> int:
        """Send ``text`` to every admin; returns how many received it. Failures are logged only."""
        delivered = 0
        for admin in self.admins:
            try:
                await self._client().send_message(admin, text)
            except (RPCError, KeyError, ValueError, OSError) as exc:
                # An admin who never opened a chat with the bot cannot be messaged by it.
                log.warning("could not notify admin %s: %s", admin, getattr(exc, "ID", exc))
                continue
            delivered += 1
        self.sent += delivered
        return delivered
