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
