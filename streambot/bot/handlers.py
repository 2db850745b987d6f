"""The main bot's Telegram handlers: a file in, links out; commands for users and admins.

Handlers receive every dependency through :class:`BotContext`, built by ``app.py``; nothing here
imports a client or a settings singleton.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pyrogram import Client, filters, types
from pyrogram.errors import FloodWait, RPCError
from pyrogram.handlers import MessageHandler

from streambot import links
from streambot.catalog import describe
from streambot.errors import FileNotFound

log = logging.getLogger(__name__)

MEDIA_FILTER = (
    filters.document
    | filters.video
    | filters.audio
    | filters.photo
    | filters.animation
    | filters.voice
    | filters.video_note
)


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@dataclass(frozen=True, slots=True)
class Links:
    download: str
    watch: str


@dataclass(slots=True)
class BotContext:
    """Everything the handlers need, passed in explicitly."""

    bin_channel: int
    base_url: str
    link_secret: bytes
    admins: frozenset[int]
    allowed_users: frozenset[int]
    link_ttl_seconds: int = 0
    #: Text of /memory (the memory manager provides it; a fallback is used until then).
    memory_report: Callable[[], Awaitable[str]] | None = None
    stats_report: Callable[[], Awaitable[str]] | None = None
    clock: Callable[[], float] = time.time
    extra_commands: dict[str, Callable[[Client, types.Message], Awaitable[None]]] = field(
        default_factory=dict
    )

    def make_links(self, message_id: int, name: str) -> Links:
        expires = int(self.clock()) + self.link_ttl_seconds if self.link_ttl_seconds else None
        token = links.sign(links.LinkClaims(message_id, expires), self.link_secret)
        dl, watch = links.link_paths(token, name)
        return Links(self.base_url + dl, self.base_url + watch)

    def is_admin(self, user_id: int | None) -> bool:
        return user_id is not None and user_id in self.admins

    def may_use(self, user_id: int | None) -> bool:
        if user_id is None:
            return False
        return not self.allowed_users or user_id in self.allowed_users or self.is_admin(user_id)


HELP = (
    "Send me a file (document, video, audio, photo, animation, voice or video note) and I "
    "reply with a download link and a watch link. Links support seeking in any player.\n\n"
    "Commands: /start, /help"
)
ADMIN_HELP = "\nAdmin commands: /memory, /stats"


def links_markup(found: Links) -> types.InlineKeyboardMarkup:
    return types.InlineKeyboardMarkup(
        [
            [
                types.InlineKeyboardButton("Download", url=found.download),
                types.InlineKeyboardButton("Watch", url=found.watch),
            ]
        ]
    )


class BotHandlers:
    """Registers and implements the handlers of the main bot."""

    def __init__(self, ctx: BotContext) -> None:
        self.ctx = ctx

    def register(self, client: Client) -> None:
        private = filters.private & filters.incoming
        client.add_handler(MessageHandler(self.on_file, private & MEDIA_FILTER))
        client.add_handler(MessageHandler(self.on_command, private & filters.regex(r"^/")))
        client.add_handler(MessageHandler(self.on_text, private & ~filters.regex(r"^/")))

    async def on_text(self, client: Client, message: types.Message) -> None:
        if message.media:
            return
        await message.reply_text("No file in that message. " + HELP)

    async def on_command(self, client: Client, message: types.Message) -> None:
        text = message.text or ""
        command = text.split()[0][1:].split("@")[0].lower() if text else ""
        user_id = message.from_user.id if message.from_user else None
        if command in ("start", "help"):
            extra = ADMIN_HELP if self.ctx.is_admin(user_id) else ""
            await message.reply_text(HELP + extra)
            return
        if command in ("memory", "stats"):
            if not self.ctx.is_admin(user_id):
                await message.reply_text("Sorry, /" + command + " is for admins only.")
                return
            report = self.ctx.memory_report if command == "memory" else self.ctx.stats_report
            text = await report() if report else "No report available."
            await message.reply_text(text)
            return
        handler = self.ctx.extra_commands.get(command)
        if handler is not None:
            await handler(client, message)
            return
        await message.reply_text("Unknown command. " + HELP)

    async def on_file(self, client: Client, message: types.Message) -> None:
        user_id = message.from_user.id if message.from_user else None
        if not self.ctx.may_use(user_id):
            await message.reply_text("Sorry, this bot is private.")
            return
        try:
            stored = await message.copy(self.ctx.bin_channel)
        except FloodWait as exc:
            log.warning("copy to storage hit FloodWait %ss", exc.value)
            await message.reply_text(
                f"Telegram asks me to slow down; please send the file again in {exc.value} seconds."
            )
            return
        except RPCError as exc:
            log.error("copy to storage failed: %s", exc.ID)
            await message.reply_text(
                "I could not store this file (the storage channel is not accessible). "
                "The operator has been told."
            )
            return
        try:
            info, _ = describe(stored)
        except FileNotFound:
            await message.reply_text("That message holds no file I can link to.")
            return
        found = self.ctx.make_links(stored.id, info.name)
        await message.reply_text(
            f"{info.name}\n{human_size(info.size)}\n\nDownload: {found.download}\n"
            f"Watch: {found.watch}",
            reply_markup=links_markup(found),
            disable_web_page_preview=True,
        )
