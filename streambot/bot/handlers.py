"""The main bot's Telegram handlers: a file in, links out; commands for users and admins.

Handlers receive every dependency through :class:`BotContext`, built by ``app.py``; nothing here
imports a client or a settings singleton. Every path answers the user: a refusal is polite and
specific, never silence.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pyrogram import Client, filters, types
from pyrogram.enums import MessageEntityType
from pyrogram.errors import FloodWait, RPCError
from pyrogram.handlers import CallbackQueryHandler, MessageHandler

from streambot import links
from streambot.bandwidth import Bandwidth
from streambot.bot.ratelimit import LinkRateLimiter, minutes_text
from streambot.catalog import describe, media_of
from streambot.errors import FileNotFound
from streambot.guard import LinkGuard
from streambot.store import Store, StoredFile
from streambot.units import bytes_text, gb_text, human_size

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
FILES_PAGE = 5
NO_PREVIEW = types.LinkPreviewOptions(is_disabled=True)
_TOKEN_IN_LINK = re.compile(r"/(?:dl|watch)/([A-Za-z0-9_-]+)")


@dataclass(frozen=True, slots=True)
class Links:
    download: str
    watch: str


@dataclass(slots=True)
class BotContext:
    """Everything the handlers need, passed in explicitly and whole (nothing is filled in later)."""

    bin_channel: int
    base_url: str
    link_secret: bytes
    admins: frozenset[int]
    allowed_users: frozenset[int]
    store: Store
    guard: LinkGuard
    bandwidth: Bandwidth
    #: /memory text (the memory manager provides it) and the fleet/streams part of /stats.
    memory_report: Callable[[], Awaitable[str]]
    stats_report: Callable[[], Awaitable[str]]
    limiter: LinkRateLimiter = field(default_factory=lambda: LinkRateLimiter(0))
    link_ttl_seconds: int = 0
    clock: Callable[[], float] = time.time

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


def preformatted(text: str) -> types.MessageEntity:
    """A monospace block over all of ``text`` (Telegram counts offsets in UTF-16 units)."""
    length = len(text.encode("utf-16-le")) // 2
    return types.MessageEntity(type=MessageEntityType.PRE, offset=0, length=length, language="")


def links_markup(found: Links) -> types.InlineKeyboardMarkup:
    return types.InlineKeyboardMarkup(
        [
            [
                types.InlineKeyboardButton("Download", url=found.download),
                types.InlineKeyboardButton("Watch", url=found.watch),
            ]
        ]
    )


def _guarded(
    handler: Callable[[Client, Any], Awaitable[None]],
) -> Callable[[Client, Any], Awaitable[None]]:
    """Answer the user and log once if a handler fails, so one bad update never means silence."""

    @functools.wraps(handler)
    async def run(client: Client, update: Any) -> None:
        try:
            await handler(client, update)
        except Exception:  # loop edge: the dispatcher would log and drop it silently
            log.exception("handler %s failed", handler.__name__)
            with contextlib.suppress(RPCError, OSError):
                if isinstance(update, types.Message):
                    await update.reply_text("Sorry, something went wrong. Please try again.")
                elif isinstance(update, types.CallbackQuery):
                    await update.answer("Sorry, something went wrong.")

    return run


def _user_id(message: types.Message) -> int | None:
    return message.from_user.id if message.from_user else None


class BotHandlers:
    """Registers and implements the handlers of the main bot."""

    def __init__(self, ctx: BotContext) -> None:
        self.ctx = ctx
        self._commands: dict[str, Callable[[types.Message, list[str]], Awaitable[None]]] = {
            "start": self.cmd_help,
            "help": self.cmd_help,
            "memory": self.cmd_memory,
            "stats": self.cmd_stats,
            "usage": self.cmd_usage,
            "files": self.cmd_files,
            "revoke": self.cmd_revoke,
            "ban": self.cmd_ban,
            "unban": self.cmd_unban,
        }

    def register(self, client: Client) -> None:
        private = filters.private & filters.incoming
        client.add_handler(MessageHandler(_guarded(self.on_file), private & MEDIA_FILTER))
        client.add_handler(
            MessageHandler(_guarded(self.on_command), private & filters.regex(r"^/"))
        )
        client.add_handler(MessageHandler(_guarded(self.on_text), private & ~filters.regex(r"^/")))
        client.add_handler(CallbackQueryHandler(_guarded(self.on_button)))

    # ------------------------------------------------------------------ help and dispatch
    def help_text(self, user_id: int | None) -> str:
        lines = [
            "Send me a file (document, video, audio, photo, animation, voice or video note) and I "
            "reply with a download link and a watch link. Links support seeking in any player.",
            "",
            "Commands: /files (your files and links), /revoke LINK, /usage, /help",
        ]
        limits = []
        if self.ctx.limiter.per_hour:
            limits.append(f"{self.ctx.limiter.per_hour} new links per hour")
        if self.ctx.link_ttl_seconds:
            limits.append(f"links expire after {self.ctx.link_ttl_seconds // 3600} h")
        quotas = self.ctx.bandwidth.quotas
        if quotas.per_owner_daily:
            limits.append(f"{gb_text(quotas.per_owner_daily)} of downloads per day of your files")
        if limits:
            lines.append("Limits: " + "; ".join(limits) + ".")
        if self.ctx.is_admin(user_id):
            lines.append("Admin commands: /memory, /stats, /ban USER_ID, /unban USER_ID")
        return "\n".join(lines)

    async def _refuse_if_blocked(self, message: types.Message) -> bool:
        """Answer banned or not-allowed users once, clearly; True if the message is refused."""
        user_id = _user_id(message)
        banned = (
            user_id is not None
            and not self.ctx.is_admin(user_id)
            and await self.ctx.store.is_banned(user_id)
        )
        if banned:
            await message.reply_text("You are banned from using this bot.")
            return True
        if not self.ctx.may_use(user_id):
            await message.reply_text("Sorry, this bot is private. Ask its operator for access.")
            return True
        return False

    async def on_text(self, client: Client, message: types.Message) -> None:
        if message.media:
            return
        if await self._refuse_if_blocked(message):
            return
        await message.reply_text(
            "There is no file in that message.\n\n" + self.help_text(_user_id(message))
        )

    async def on_command(self, client: Client, message: types.Message) -> None:
        parts = (message.text or "").split()
        command = parts[0][1:].split("@")[0].lower() if parts else ""
        if command not in ("start", "help") and await self._refuse_if_blocked(message):
            return
        handler = self._commands.get(command)
        if handler is None:
            await message.reply_text("Unknown command.\n\n" + self.help_text(_user_id(message)))
            return
        await handler(message, parts[1:])

    async def _admin_only(self, message: types.Message, command: str) -> bool:
        if self.ctx.is_admin(_user_id(message)):
            return False
        await message.reply_text(f"Sorry, /{command} is for admins only.")
        return True

    # ------------------------------------------------------------------ commands
    async def cmd_help(self, message: types.Message, args: list[str]) -> None:
        await message.reply_text(self.help_text(_user_id(message)))

    async def cmd_memory(self, message: types.Message, args: list[str]) -> None:
        if await self._admin_only(message, "memory"):
            return
        text = await self.ctx.memory_report()
        # Monospace keeps the report's columns aligned on every Telegram client.
        await message.reply_text(text, entities=[preformatted(text)])

    async def cmd_stats(self, message: types.Message, args: list[str]) -> None:
        if await self._admin_only(message, "stats"):
            return
        lines = [await self.ctx.stats_report()]
        bw = self.ctx.bandwidth
        q = bw.quotas
        today = await bw.usage("global", "")
        month = await bw.usage("global", "", period="month")
        lines.append(
            f"Served today (UTC): {bytes_text(today)}"
            + (f" of {gb_text(q.daily)}" if q.daily else " (no limit)")
        )
        lines.append(
            f"Served this month: {bytes_text(month)}"
            + (f" of {gb_text(q.monthly)}" if q.monthly else " (no limit)")
        )
        if q.per_owner_daily:
            lines.append(f"Per-owner daily limit: {gb_text(q.per_owner_daily)}")
        await message.reply_text("\n".join(lines))

    async def cmd_usage(self, message: types.Message, args: list[str]) -> None:
        bw, user_id = self.ctx.bandwidth, _user_id(message)
        if user_id is None:
            await message.reply_text("Usage accounting is not enabled.")
            return
        used = await bw.usage("owner", str(user_id))
        limit = bw.quotas.per_owner_daily
        text = f"Downloads of your files today: {gb_text(used)}"
        text += f" of {gb_text(limit)}." if limit else " (no daily limit)."
        await message.reply_text(text)

    async def cmd_ban(self, message: types.Message, args: list[str]) -> None:
        await self._set_ban(message, args, ban=True)

    async def cmd_unban(self, message: types.Message, args: list[str]) -> None:
        await self._set_ban(message, args, ban=False)

    async def _set_ban(self, message: types.Message, args: list[str], *, ban: bool) -> None:
        command = "ban" if ban else "unban"
        if await self._admin_only(message, command):
            return
        if len(args) != 1 or not args[0].lstrip("-").isdigit():
            await message.reply_text(f"Usage: /{command} USER_ID, e.g. /{command} 123456789")
            return
        target = int(args[0])
        if ban:
            if self.ctx.is_admin(target):
                await message.reply_text("Admins cannot be banned.")
                return
            changed = await self.ctx.store.ban(target, by=_user_id(message) or 0)
            await message.reply_text(f"User {target} is {'now' if changed else 'already'} banned.")
        else:
            changed = await self.ctx.store.unban(target)
            await message.reply_text(
                f"User {target} is {'no longer' if changed else 'not'} banned."
            )

    async def cmd_files(self, message: types.Message, args: list[str]) -> None:
        page = int(args[0]) - 1 if args and args[0].isdigit() and int(args[0]) > 0 else 0
        text, markup = await self._files_page(_user_id(message) or 0, page)
        await message.reply_text(text, reply_markup=markup, link_preview_options=NO_PREVIEW)

    async def _files_page(
        self, user_id: int, page: int
    ) -> tuple[str, types.InlineKeyboardMarkup | None]:
        store = self.ctx.store
        total = await store.count_files(user_id)
        if not total:
            return "You have not shared any files yet. Send me one!", None
        pages = (total + FILES_PAGE - 1) // FILES_PAGE
        page = min(page, pages - 1)
        files = await store.list_files(user_id, limit=FILES_PAGE, offset=page * FILES_PAGE)
        lines = [f"Your files (page {page + 1} of {pages}):", ""]
        rows: list[list[types.InlineKeyboardButton]] = []
        for i, f in enumerate(files, page * FILES_PAGE + 1):
            revoked = await store.is_revoked(f.message_id)
            found = self.ctx.make_links(f.message_id, f.name)
            state = " (revoked)" if revoked else ""
            lines.append(f"{i}. {f.name} · {human_size(f.size)}{state}")
            if not revoked:
                lines.append(f"   {found.download}")
                rows.append(
                    [
                        types.InlineKeyboardButton(
                            f"Revoke {i}", callback_data=f"rv:{f.message_id}:{page}"
                        )
                    ]
                )
        nav = []
        if page > 0:
            nav.append(types.InlineKeyboardButton("« Prev", callback_data=f"fp:{page - 1}"))
        if page + 1 < pages:
            nav.append(types.InlineKeyboardButton("Next »", callback_data=f"fp:{page + 1}"))
        if nav:
            rows.append(nav)
        return "\n".join(lines), types.InlineKeyboardMarkup(rows) if rows else None

    async def _revoke(self, user_id: int, message_id: int) -> str:
        store = self.ctx.store
        stored = await store.file_by_message(message_id)
        if not self.ctx.is_admin(user_id) and (stored is None or stored.owner_id != user_id):
            return "You can only revoke links to your own files."
        changed = await store.revoke(message_id, by=user_id)
        self.ctx.guard.forget(message_id)
        name = stored.name if stored else f"message {message_id}"
        return f"Links to {name} are {'now' if changed else 'already'} revoked."

    async def cmd_revoke(self, message: types.Message, args: list[str]) -> None:
        match = _TOKEN_IN_LINK.search(args[0]) if args else None
        token = match.group(1) if match else (args[0] if args else "")
        try:
            claims = links.verify(token, self.ctx.link_secret, now=self.ctx.clock())
        except links.ExpiredLink as exc:
            claims = exc.claims
        except links.InvalidLink:
            await message.reply_text("Usage: /revoke LINK, with a link this bot gave you.")
            return
        await message.reply_text(await self._revoke(_user_id(message) or 0, claims.message_id))

    async def on_button(self, client: Client, query: types.CallbackQuery) -> None:
        data = query.data if isinstance(query.data, str) else ""
        user_id = query.from_user.id if query.from_user else 0
        kind, _, rest = data.partition(":")
        if kind == "fp" and rest.isdigit():
            text, markup = await self._files_page(user_id, int(rest))
        elif kind == "rv":
            msg_part, _, page = rest.partition(":")
            if not msg_part.isdigit():
                await query.answer("This button is no longer valid.")
                return
            await query.answer(await self._revoke(user_id, int(msg_part)))
            text, markup = await self._files_page(user_id, int(page) if page.isdigit() else 0)
        else:
            await query.answer("This button is no longer valid.")
            return
        if query.message is not None:
            await query.message.edit_text(
                text, reply_markup=markup, link_preview_options=NO_PREVIEW
            )
        if kind == "fp":
            await query.answer()

    # ------------------------------------------------------------------ files
    async def on_file(self, client: Client, message: types.Message) -> None:
        if await self._refuse_if_blocked(message):
            return
        user_id = _user_id(message) or 0
        found = media_of(message)
        unique_id = found[1].file_unique_id if found else ""
        store = self.ctx.store
        existing = await store.find_file(user_id, unique_id) if unique_id else None
        if existing is not None and not await store.is_revoked(existing.message_id):
            await self._reply_links(message, existing.message_id, existing.name, existing.size)
            return
        if not self.ctx.is_admin(user_id):
            wait = self.ctx.limiter.retry_after(user_id)
            if wait > 0:
                await message.reply_text(
                    f"You can create {self.ctx.limiter.per_hour} links per hour. "
                    f"Please try again in {minutes_text(wait)}."
                )
                return
        try:
            stored = await message.copy(self.ctx.bin_channel)
        except FloodWait as exc:
            log.warning("copying to storage hit FloodWait of %ss", exc.value)
            await message.reply_text(
                f"Telegram asks me to slow down; please send the file again in {exc.value} seconds."
            )
            return
        except RPCError as exc:
            log.error("copying to storage failed: %s", exc.ID)
            await message.reply_text(_copy_error_text(exc.ID or ""))
            return
        if stored is None:
            # Telegram accepted the copy but its answer carried no message: there is nothing
            # to link to, and the user must not be left waiting for a reply.
            log.warning("copying to storage returned no message")
            await message.reply_text(
                "Telegram did not confirm storing your file; please send it again."
            )
            return
        try:
            info, _ = describe(stored)
        except FileNotFound:
            await message.reply_text("That message holds no file I can link to.")
            return
        self.ctx.limiter.record(user_id)
        saved = await store.add_file(
            StoredFile(
                owner_id=user_id,
                message_id=stored.id,
                unique_id=info.unique_id,
                name=info.name,
                size=info.size,
                mime_type=info.mime_type,
                created_at=self.ctx.clock(),
            )
        )
        if saved.message_id != stored.id:
            # A concurrent copy of the same file won the race: reuse its message.
            await self._reply_links(message, saved.message_id, saved.name, saved.size)
            return
        await self._reply_links(message, stored.id, info.name, info.size)

    async def _reply_links(
        self, message: types.Message, message_id: int, name: str, size: int
    ) -> None:
        found = self.ctx.make_links(message_id, name)
        await message.reply_text(
            f"{name}\n{human_size(size)}\n\nDownload: {found.download}\nWatch: {found.watch}",
            reply_markup=links_markup(found),
            link_preview_options=NO_PREVIEW,
        )


def _copy_error_text(error_id: str) -> str:
    if error_id in ("FILE_PARTS_INVALID", "FILE_TOO_BIG", "MEDIA_INVALID"):
        return "Telegram would not store this file (it is too big or invalid)."
    if error_id.startswith("CHANNEL") or error_id in (
        "CHAT_ADMIN_REQUIRED",
        "CHAT_WRITE_FORBIDDEN",
        "PEER_ID_INVALID",
    ):
        return "I cannot store files right now: the storage channel is not accessible. The operator has been told."
    return "Telegram refused to store this file right now; please try again later."
