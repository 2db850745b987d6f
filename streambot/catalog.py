"""The catalog: what a stored message holds (size, type, name, ...) and where each client reads it from.

File ids and file references are per bot account, so every fleet client resolves the stored message
itself; both the shared file info and the per-client locations live in bounded caches with a TTL.
A stale file-info entry is served while one background refresh runs (stale-while-revalidate), so a
popular link never waits on Telegram once it is warm.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pyrogram import raw, types, utils
from pyrogram.errors import FloodPremiumWait, FloodWait, RPCError
from pyrogram.file_id import FileId, FileType

from streambot.cache import BoundedTTLCache
from streambot.errors import FileNotFound, StreamAborted
from streambot.fleet import Fleet, FleetClient

log = logging.getLogger(__name__)

#: Telegram message ids are TL ``int`` (signed 32-bit): pyrogram cannot even encode a larger one
#: (``OverflowError``), so a link naming one points at nothing that can exist.
MAX_MESSAGE_ID = 2**31 - 1

_MIME = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
_MEDIA_ATTRS = ("video", "document", "audio", "photo", "animation", "voice", "video_note")
_DEFAULT_NAMES = {
    "photo": ("photo", ".jpg"),
    "voice": ("voice", ".ogg"),
    "video_note": ("video_note", ".mp4"),
    "animation": ("animation", ".mp4"),
    "video": ("video", ".mp4"),
    "audio": ("audio", ".mp3"),
    "document": ("file", ".bin"),
}


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What the HTTP side needs to answer for a stored file, independent of the client."""

    message_id: int
    size: int
    mime_type: str
    name: str
    unique_id: str
    dc_id: int
    date: datetime
    kind: str


@dataclass(frozen=True, slots=True)
class FileLocation:
    """Where one client reads the bytes: its own file reference, on the file's DC."""

    location: raw.base.InputFileLocation
    dc_id: int


def media_of(message: types.Message) -> tuple[str, Any] | None:
    for attr in _MEDIA_ATTRS:
        media = getattr(message, attr, None)
        if media is not None:
            return attr, media
    return None


def describe(message: types.Message) -> tuple[FileInfo, FileId]:
    """Given a parsed storage message, return its file info and this client's decoded file id."""
    found = media_of(message)
    if found is None or message.empty:
        raise FileNotFound(f"message {message.id} holds no file")
    kind, media = found
    file_id = FileId.decode(media.file_id)
    mime = getattr(media, "mime_type", None) or ""
    name = getattr(media, "file_name", None) or ""
    if kind == "photo":
        mime = mime or "image/jpeg"
    if not name:
        stem, ext = _DEFAULT_NAMES.get(kind, ("file", ".bin"))
        ext = mimetypes.guess_extension(mime) or ext if mime else ext
        name = f"{stem}_{message.id}{ext}"
    if not _MIME.fullmatch(mime):
        # The uploader's client chose this string; only a plain type/subtype may reach a header.
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
    date = message.date or datetime.fromtimestamp(0, UTC)
    if date.tzinfo is None:
        date = date.replace(tzinfo=UTC)
    info = FileInfo(
        message_id=message.id,
        size=int(media.file_size or 0),
        mime_type=mime,
        name=name,
        unique_id=media.file_unique_id,
        dc_id=file_id.dc_id,
        date=date.astimezone(UTC).replace(microsecond=0),
        kind=kind,
    )
    return info, file_id


def location_of(file_id: FileId) -> FileLocation:
    media_id, access_hash = file_id.media_id, file_id.access_hash
    if media_id is None or access_hash is None:
        # Photo and document file ids always carry both; any other kind cannot be streamed.
        raise FileNotFound(f"a {file_id.file_type.name.lower()} file id names no media")
    if file_id.file_type is FileType.PHOTO:
        loc: raw.base.InputFileLocation = raw.types.InputPhotoFileLocation(
            id=media_id,
            access_hash=access_hash,
            file_reference=file_id.file_reference,
            thumb_size=file_id.thumbnail_size,
        )
    else:
        loc = raw.types.InputDocumentFileLocation(
            id=media_id,
            access_hash=access_hash,
            file_reference=file_id.file_reference,
            thumb_size="",
        )
    return FileLocation(loc, file_id.dc_id)


class Catalog:
    """Resolves storage messages to :class:`FileInfo` and per-client :class:`FileLocation`.

    Lookups of the same message by the same client share one ``get_messages`` (single flight):
    a popular link going cold, or many streams hitting an expired reference at once, cost
    Telegram one request rather than one per viewer.
    """

    def __init__(
        self,
        fleet: Fleet,
        channel_id: int,
        *,
        limit: int = 1024,
        ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        on_request: Callable[[str, str], None] | None = None,
        lookup_timeout: float = 15.0,
    ) -> None:
        self.lookup_timeout = lookup_timeout
        self._fleet = fleet
        self._channel_id = channel_id
        self.info_cache: BoundedTTLCache[int, FileInfo] = BoundedTTLCache(limit, ttl, clock)
        # Locations are per client: several entries per file, so allow more of them.
        self.location_cache: BoundedTTLCache[tuple[str, int], FileLocation] = BoundedTTLCache(
            limit * max(1, len(fleet.clients)), ttl, clock
        )
        # Both bounded by the requests in progress (at most one entry per cached message).
        self._refreshing: dict[int, asyncio.Task[None]] = {}
        self._resolving: dict[tuple[str, int], asyncio.Task[tuple[FileInfo, FileLocation]]] = {}
        self._on_request = on_request or (lambda method, client: None)

    async def _fetch(self, fc: FleetClient, message_id: int) -> tuple[FileInfo, FileLocation]:
        self._on_request("channels.GetMessages", fc.name)
        try:
            # What pyrogram's get_messages sends, asked directly: get_messages sleeps through any
            # FloodWait however long (sleep_threshold=-1). Here a FloodWait above the client's
            # threshold surfaces, so the lookup moves to another client at once; the timeout
            # still bounds everything else.
            async with asyncio.timeout(self.lookup_timeout):
                client = fc.client
                peer = await client.resolve_peer(self._channel_id)
                if not isinstance(peer, raw.types.InputPeerChannel):
                    raise FileNotFound(f"BIN_CHANNEL {self._channel_id} is not a channel")
                channel = raw.types.InputChannel(
                    channel_id=peer.channel_id, access_hash=peer.access_hash
                )
                answer = await client.invoke(
                    raw.functions.channels.GetMessages(
                        channel=channel, id=[raw.types.InputMessageID(id=message_id)]
                    )
                )
                parsed = await utils.parse_messages(client, answer, replies=1)
                message = parsed[0] if parsed else None
        except RPCError as exc:
            log.warning("get_messages(%s) via %s failed: %s", message_id, fc.name, exc.ID)
            raise
        if not isinstance(message, types.Message):
            raise FileNotFound(f"message {message_id} not found")
        info, file_id = describe(message)
        location = location_of(file_id)
        self.info_cache.put(message_id, info)
        self.location_cache.put((fc.name, message_id), location)
        return info, location

    async def _resolve(self, fc: FleetClient, message_id: int) -> tuple[FileInfo, FileLocation]:
        """``_fetch`` shared by concurrent callers; a caller that is cancelled leaves it running."""
        key = (fc.name, message_id)
        task = self._resolving.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(fc, message_id))
            self._resolving[key] = task
            task.add_done_callback(lambda t: self._forget(key, t))
        return await asyncio.shield(task)

    def _forget(self, key: tuple[str, int], task: asyncio.Task[Any]) -> None:
        if self._resolving.get(key) is task:
            del self._resolving[key]
        if not task.cancelled():
            task.exception()  # seen: every waiter may have gone away

    def _any_client(self, exclude: list[FleetClient] | None = None) -> FleetClient:
        available = [fc for fc in self._fleet.available() if fc not in (exclude or ())]
        return available[0] if available else self._fleet.main

    async def info(self, message_id: int) -> FileInfo:
        """File info for a stored message; a stale entry is returned at once and refreshed behind.

        Raises FileNotFound when the message is gone or holds no file, StreamAborted when
        Telegram cannot be asked now.
        """
        if not 1 <= message_id <= MAX_MESSAGE_ID:
            raise FileNotFound(f"message id {message_id} is outside Telegram's range")
        cached = self.info_cache.get(message_id)
        if cached is not None:
            info, fresh = cached
            if not fresh and message_id not in self._refreshing:
                task = asyncio.create_task(self._refresh(message_id))
                self._refreshing[message_id] = task
                task.add_done_callback(lambda _t: self._refreshing.pop(message_id, None))
            return info
        return await self._lookup(message_id)

    async def _lookup(self, message_id: int) -> FileInfo:
        """Ask Telegram, moving to the next bot when one fails (a FloodWait also cools it down).

        Raises FileNotFound, or StreamAborted when no bot could answer.
        """
        tried: list[FleetClient] = []
        while True:
            fc = self._any_client(tried)
            try:
                info, _ = await self._resolve(fc, message_id)
                return info
            except (FloodWait, FloodPremiumWait) as exc:
                # That bot may not ask for a while; the next one can (and streams avoid it).
                seconds = exc.value if isinstance(exc.value, int) else 0
                self._fleet.cool_down(fc, float(seconds))
                failure: Exception = exc
            except (RPCError, OSError) as exc:  # OSError: pyrogram's TimeoutError, ours too
                failure = exc
            tried.append(fc)
            if not [c for c in self._fleet.available() if c not in tried]:
                if isinstance(failure, RPCError):
                    raise StreamAborted(f"Telegram error {failure.ID}") from failure
                raise StreamAborted(f"Telegram unreachable: {failure!r}") from failure
            log.info(
                "looking up message %s via %s failed (%r); trying another bot",
                message_id,
                fc.name,
                failure,
            )

    async def _refresh(self, message_id: int) -> None:
        # The same bot rotation as a cold lookup: a refresh that hits a FloodWait cools that bot
        # down (streams avoid it too) and asks the next one, instead of leaving the entry stale.
        try:
            await self._lookup(message_id)
        except FileNotFound:
            self.info_cache.pop(message_id)
        except StreamAborted as exc:
            # No bot could answer: the stale entry keeps serving; the next request tries again.
            log.info("background refresh of message %s failed: %s", message_id, exc)

    async def location(
        self, fc: FleetClient, message_id: int, *, refresh: bool = False
    ) -> FileLocation:
        """Where ``fc`` reads the file; ``refresh`` re-fetches (an expired file reference).

        Raises what Telegram raises (RPCError, OSError) and FileNotFound; the streamer decides.
        """
        key = (fc.name, message_id)
        if not refresh:
            cached = self.location_cache.get(key)
            if cached is not None and cached[1]:
                return cached[0]
        _, location = await self._resolve(fc, message_id)
        return location

    def remember(self, fc: FleetClient, message_id: int, location: FileLocation) -> None:
        """Store a corrected location (the file moved DC), so later streams start right."""
        self.location_cache.put((fc.name, message_id), location)

    def sweep(self) -> int:
        """Drop long-stale entries from both caches; returns how many (a scheduler job)."""
        return self.info_cache.sweep() + self.location_cache.sweep()

    async def close(self) -> None:
        tasks: list[asyncio.Task[Any]] = [*self._refreshing.values(), *self._resolving.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
