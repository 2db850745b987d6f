"""The simulated Telegram: state (bots, users, channels, messages, files) and the MTProto answers.

It is reached only through :class:`streambot.simulator.session.SimSession`, a subclass of pyrogram's real
``Session`` whose ``send()`` calls :meth:`SimulatedTelegram.handle`. Everything above that seam —
``Client.start``, ``invoke`` retries and FloodWait sleeping, ``get_messages`` parsing, ``get_session``,
the dispatcher and handlers — is the library's own code, so tests exercise what production runs.

Errors are raised through pyrogram's ``RPCError.raise_it`` so callers see the real exception classes.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from pyrogram import raw
from pyrogram.errors import RPCError
from pyrogram.raw.core import TLObject

from streambot.simulator.content import Content
from streambot.units import MIB

if TYPE_CHECKING:
    from streambot.simulator.session import SimSession

MediaKind = Literal["document", "video", "audio", "photo", "animation", "voice", "video_note"]
MEDIA_KINDS: tuple[MediaKind, ...] = (
    "document",
    "video",
    "audio",
    "photo",
    "animation",
    "voice",
    "video_note",
)
#: "no_message": the request succeeds but the answer carries no new message (an empty
#: ``Updates``), as Telegram may answer a send; pyrogram's send/copy then returns None.
#: "bad_msg": Telegram refuses the message itself with a ``bad_msg_notification`` (``code``: 16/17
#: msg_id too low/high, 32/33 seq_no too low/high; default 16). The answer is a
#: ``BadMsgNotification`` object, what pyrogram's ``Session.send`` returns for one; the wire
#: server sends it as the real service message for the request's msg_id instead of an rpc_result.
#: "cdn_redirect": upload.GetFile answers ``upload.fileCdnRedirect`` (the file is on a CDN DC),
#: which Telegram may send to a client that did not ask for CDN files only by mistake, but does.
FaultKind = Literal["rpc", "oserror", "drop", "no_message", "bad_msg", "cdn_redirect"]
#: bad_msg_notification codes a "bad_msg" fault may carry (msg_id and seq_no complaints).
BAD_MSG_CODES = frozenset({16, 17, 32, 33, 34, 35})
#: Delivers a bot's update elsewhere (the wire server's main connection of that bot): gets the full
#: ``Updates`` and, for a plain private text, the ``updateShortMessage`` Telegram would send instead.
#: Returns False when it cannot deliver (the bot has no connection there), so the next sink tries.
UpdateSink = Callable[["SimBot", Any, Any], Awaitable[bool]]
#: The raw ``RpcError`` behind an exception raised by :meth:`SimulatedTelegram._err`.
_RPC_ERROR_ATTR = "sim_rpc_error"


def rpc_error_of(exc: BaseException) -> raw.types.RpcError | None:
    """The error as Telegram sent it (code and message), for a server that must send it again."""
    error = getattr(exc, _RPC_ERROR_ATTR, None)
    return error if isinstance(error, raw.types.RpcError) else None


def wire(obj: TLObject[Any]) -> Any:
    """Serialize and parse back, so objects look exactly like ones read off the network.

    Hand-built raw objects leave optional vectors as ``None``; decoded ones have ``[]``, and pyrogram's
    parsers rely on that. The round trip also proves the object is valid for the installed layer.
    """
    return TLObject.read(io.BytesIO(obj.write()))


def cdn_redirect(dc_id: int) -> raw.types.upload.FileCdnRedirect:
    """An ``upload.fileCdnRedirect``: "fetch this file from CDN DC ``dc_id`` with this token"."""
    return raw.types.upload.FileCdnRedirect(
        dc_id=dc_id,
        file_token=b"sim-cdn-token",
        encryption_key=bytes(32),
        encryption_iv=bytes(16),
        file_hashes=[],
    )


def getfile_rule_violation(offset: int, limit: int, precise: bool) -> str | None:
    """Telegram's documented upload.getFile rules; the RPC error id for a violation, else None."""
    if offset < 0 or offset % (1024 if precise else 4096):
        return "OFFSET_INVALID"
    if limit <= 0 or limit % (1024 if precise else 4096):
        return "LIMIT_INVALID"
    if precise and limit > MIB:
        return "LIMIT_INVALID"
    if not precise and MIB % limit:
        return "LIMIT_INVALID"
    if offset // MIB != (offset + limit - 1) // MIB:
        return "LIMIT_INVALID"
    return None


@dataclass(slots=True)
class SimBot:
    bot_id: int
    username: str
    token: str
    dc_id: int = 2
    offline: bool = False  # every request from this bot fails with a network error

    def raw_user(self) -> raw.types.User:
        return raw.types.User(
            id=self.bot_id,
            is_self=True,
            bot=True,
            bot_info_version=1,  # a bot user must carry it, or the serialized form is misaligned
            access_hash=self.bot_id ^ 0x5A5A,
            first_name=self.username,
            username=self.username,
        )


@dataclass(slots=True)
class SimUser:
    user_id: int
    first_name: str
    username: str | None = None

    def raw_user(self) -> raw.types.User:
        return raw.types.User(
            id=self.user_id,
            access_hash=self.user_id ^ 0x3C3C,
            first_name=self.first_name,
            username=self.username,
        )


@dataclass(slots=True)
class SimChannel:
    channel_id: int  # raw id; the bot-API id is -100<channel_id>
    title: str
    members: set[int] = field(default_factory=set)  # bot ids that can read it
    next_message_id: int = 1

    @property
    def access_hash(self) -> int:
        return 0x1234_5678_9ABC ^ self.channel_id

    @property
    def chat_id(self) -> int:
        return -1_000_000_000_000 - self.channel_id

    def raw_channel(self) -> raw.types.Channel:
        return raw.types.Channel(
            id=self.channel_id,
            title=self.title,
            photo=raw.types.ChatPhotoEmpty(),
            date=0,
            access_hash=self.access_hash,
            broadcast=True,
        )


@dataclass(slots=True)
class SimFile:
    media_id: int
    access_hash: int
    content: Content
    name: str
    mime_type: str
    kind: MediaKind
    dc_id: int
    date: int
    reference_version: int = 0

    @property
    def size(self) -> int:
        return self.content.size

    def file_reference(self, bot_id: int) -> bytes:
        # Telegram's file references are per account; modelling that forces every fleet client to
        # resolve the stored message itself, as the real service does.
        return f"\x01{self.media_id}:{bot_id}:{self.reference_version}".encode()

    def raw_media(self, bot_id: int) -> raw.base.MessageMedia:
        ref = self.file_reference(bot_id)
        if self.kind == "photo":
            photo = raw.types.Photo(
                id=self.media_id,
                access_hash=self.access_hash,
                file_reference=ref,
                date=self.date,
                sizes=[raw.types.PhotoSize(type="y", w=1280, h=720, size=self.size)],
                dc_id=self.dc_id,
            )
            return raw.types.MessageMediaPhoto(photo=photo)
        attrs: list[raw.base.DocumentAttribute] = [
            raw.types.DocumentAttributeFilename(file_name=self.name)
        ]
        flags: dict[str, bool] = {}
        if self.kind in ("video", "animation", "video_note"):
            attrs.append(
                raw.types.DocumentAttributeVideo(
                    duration=60,
                    w=640,
                    h=360,
                    supports_streaming=True,
                    round_message=self.kind == "video_note" or None,
                )
            )
            if self.kind == "animation":
                attrs.append(raw.types.DocumentAttributeAnimated())
            flags = {"video": self.kind == "video", "round": self.kind == "video_note"}
        elif self.kind in ("audio", "voice"):
            attrs.append(
                raw.types.DocumentAttributeAudio(
                    duration=60, voice=self.kind == "voice" or None, title=self.name
                )
            )
            flags = {"voice": self.kind == "voice"}
        document = raw.types.Document(
            id=self.media_id,
            access_hash=self.access_hash,
            file_reference=ref,
            date=self.date,
            mime_type=self.mime_type,
            size=self.size,
            dc_id=self.dc_id,
            attributes=attrs,
        )
        return raw.types.MessageMediaDocument(
            document=document,
            video=flags.get("video") or None,
            round=flags.get("round") or None,
            voice=flags.get("voice") or None,
        )


@dataclass(slots=True)
class SimMessage:
    message_id: int
    date: int
    media_id: int | None = None
    text: str = ""


@dataclass(frozen=True, slots=True)
class SentMessage:
    """What a bot sent to a user: recorded so tests and the demo can read the bot's replies."""

    chat_id: int
    bot_id: int
    message_id: int
    text: str
    buttons: tuple[tuple[str, str], ...]  # (label, url or callback data)
    media_id: int | None = None
    # Formatting Telegram would apply, as raw type names, e.g. ("MessageEntityPre",).
    entities: tuple[str, ...] = ()


@dataclass(slots=True)
class Fault:
    method: str
    kind: FaultKind
    code: int = 0
    message: str = ""
    times: int | None = 1  # None: every matching request until the faults are cleared
    skip: int = 0  # let this many matching requests through first (mid-stream faults)
    bot_id: int | None = None
    dc_id: int | None = None  # only requests on a connection to this DC
    probability: float = 1.0  # each matching request fails with this chance (flaky networks)


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    bot_id: int | None
    client: str
    dc_id: int
    is_media: bool
    offset: int | None = None
    limit: int | None = None
    precise: bool = False


class SimulatedTelegram:
    """In-process Telegram with knobs for latency, bandwidth and faults, and a request log."""

    def __init__(
        self,
        *,
        home_dc: int = 2,
        rtt: float = 0.0,
        bandwidth: float | None = None,
        call_log_limit: int = 100_000,
        sent_log_limit: int = 10_000,
    ) -> None:
        self.home_dc = home_dc
        self.rtt = rtt  # seconds added to every request
        self.bandwidth = bandwidth  # bytes/second for GetFile payloads; None = unlimited
        # Key exchanges get junk back, as from a proxy or firewall answering in our place.
        self.garbled_handshake = False
        self.bots: dict[int, SimBot] = {}
        self.users: dict[int, SimUser] = {}
        self.channels: dict[int, SimChannel] = {}
        self.files: dict[int, SimFile] = {}
        self.messages: dict[tuple[int, int], SimMessage] = {}  # (peer key, msg id)
        self.faults: list[Fault] = []
        self.counts: Counter[tuple[str, str]] = Counter()  # (method, client name)
        # (method, bot id; 0 before login): client names differ per process, bot ids do not.
        self.bot_counts: Counter[tuple[str, int]] = Counter()
        self._fault_rng = random.Random(0)  # seeded: a flaky-fault run can be repeated
        self.calls: deque[Call] = deque(maxlen=call_log_limit)
        # Requests being answered right now, and the most ever at once, by method: how tests
        # see that a streamer really keeps N GetFile requests in flight.
        self.inflight: Counter[str] = Counter()
        self.max_inflight: Counter[str] = Counter()
        self.sent: deque[SentMessage] = deque(maxlen=sent_log_limit)
        self._sessions: set[SimSession] = set()
        self._ids = itertools.count(1)
        self._pts = itertools.count(2)
        self._sent_event = asyncio.Event()
        self._callback_answers: deque[tuple[int, str]] = deque(maxlen=1000)
        self._seen: set[tuple[int, int]] = set()  # (bot id, user id): users who wrote to a bot
        # Messages bots sent in private chats, for messages.GetMessages (bounded like `sent`).
        self._private_sent: dict[int, tuple[SimUser, SimBot, Any]] = {}
        # Where updates go before the in-process clients (the wire server registers here).
        self.update_sinks: list[UpdateSink] = []
        # Private messages each bot received, by pts, for updates.GetDifference (bounded).
        self._difference: dict[int, deque[tuple[int, Any, SimUser]]] = {}
        self.difference_limit = 1000

    # ------------------------------------------------------------------ scenario building
    def add_bot(
        self, username: str, *, bot_id: int | None = None, dc_id: int | None = None
    ) -> SimBot:
        bot_id = bot_id or 7_000_000_000 + len(self.bots) + 1
        token = f"{bot_id}:SIM{username}{'x' * max(0, 30 - len(username))}"
        bot = SimBot(bot_id, username, token, dc_id or self.home_dc)
        self.bots[bot_id] = bot
        return bot

    def add_user(self, first_name: str, *, user_id: int | None = None) -> SimUser:
        user_id = user_id or 100_000 + len(self.users) + 1
        user = SimUser(user_id, first_name, first_name.lower())
        self.users[user_id] = user
        return user

    def add_channel(
        self, title: str = "bin", *, channel_id: int = 3_012_345_678, members: Iterable[SimBot] = ()
    ) -> SimChannel:
        channel = SimChannel(channel_id, title, {b.bot_id for b in members})
        self.channels[channel_id] = channel
        return channel

    def grant(self, channel: SimChannel, bot: SimBot) -> None:
        channel.members.add(bot.bot_id)

    def deny(self, channel: SimChannel, bot: SimBot) -> None:
        channel.members.discard(bot.bot_id)

    def add_file(
        self,
        content: Content,
        *,
        name: str,
        mime_type: str = "application/octet-stream",
        kind: MediaKind = "document",
        dc_id: int | None = None,
    ) -> SimFile:
        media_id = 5_000_000_000 + next(self._ids)
        f = SimFile(
            media_id=media_id,
            access_hash=media_id ^ 0xABCDEF,
            content=content,
            name=name,
            mime_type=mime_type,
            kind=kind,
            dc_id=dc_id or self.home_dc,
            date=int(time.time()),
        )
        self.files[media_id] = f
        return f

    def post_file(self, channel: SimChannel, f: SimFile) -> int:
        """Post a file into a channel as its owner would; returns the new message id."""
        msg_id = channel.next_message_id
        channel.next_message_id += 1
        self.messages[(channel.chat_id, msg_id)] = SimMessage(msg_id, int(time.time()), f.media_id)
        return msg_id

    def delete_message(self, channel: SimChannel, message_id: int) -> None:
        self.messages.pop((channel.chat_id, message_id), None)

    def expire_file_reference(self, media_id: int) -> None:
        self.files[media_id].reference_version += 1

    def inject(
        self,
        method: str,
        *,
        kind: FaultKind = "rpc",
        code: int = 0,
        message: str = "",
        times: int | None = 1,
        skip: int = 0,
        bot: SimBot | None = None,
        dc: int | None = None,
        probability: float = 1.0,
    ) -> Fault:
        """Make the next matching request(s) fail. ``kind='drop'`` behaves like a lost answer.

        ``times=None`` keeps failing until the fault is removed; ``dc`` limits it to requests on
        connections to that DC; ``probability`` makes each matching request fail only by chance.
        """
        fault = Fault(
            method,
            kind,
            code,
            message,
            times,
            skip,
            bot.bot_id if bot else None,
            dc,
            probability,
        )
        self.faults.append(fault)
        return fault

    def flood_wait(self, seconds: int, *, method: str = "upload.GetFile", **kw: Any) -> Fault:
        return self.inject(method, code=420, message=f"FLOOD_WAIT_{seconds}", **kw)

    def set_offline(self, bot: SimBot, offline: bool = True) -> None:
        bot.offline = offline

    def getfile_calls(self) -> list[Call]:
        return [c for c in self.calls if c.method == "upload.GetFile"]

    def count(self, method: str, client: str | None = None) -> int:
        return sum(n for (m, c), n in self.counts.items() if m == method and client in (None, c))

    # ------------------------------------------------------------------ users talking to bots
    def bot_client(self, bot: SimBot) -> Any:
        for s in self._sessions:
            client = s.client
            me = getattr(client, "me", None)
            if me is not None and me.id == bot.bot_id and not client.no_updates:
                return client
        raise LookupError(f"bot @{bot.username} is not running with updates enabled")

    def started(self, user: SimUser, bot: SimBot) -> None:
        """``user`` pressed Start in a chat with ``bot`` before the simulation began."""
        self._seen.add((bot.bot_id, user.user_id))

    async def send_user_message(
        self,
        user: SimUser,
        bot: SimBot,
        *,
        text: str = "",
        file: SimFile | None = None,
    ) -> int:
        """Deliver a private message from ``user`` to ``bot`` as a real update; returns its id."""
        key = (user.user_id, bot.bot_id)
        self._seen.add((bot.bot_id, user.user_id))
        msg_id = self._next_private_id(key)
        self.messages[(self._private_key(key), msg_id)] = SimMessage(
            msg_id, int(time.time()), file.media_id if file else None, text
        )
        now = int(time.time())
        entities = self._command_entities(text)
        raw_msg = raw.types.Message(
            id=msg_id,
            peer_id=raw.types.PeerUser(user_id=user.user_id),
            from_id=raw.types.PeerUser(user_id=user.user_id),
            date=now,
            message=text,
            media=file.raw_media(bot.bot_id) if file else None,
            entities=entities,
        )
        pts = next(self._pts)
        log = self._difference.setdefault(bot.bot_id, deque(maxlen=self.difference_limit))
        log.append((pts, raw_msg, user))
        update = raw.types.Updates(
            updates=[raw.types.UpdateNewMessage(message=raw_msg, pts=pts, pts_count=1)],
            users=[user.raw_user(), bot.raw_user()],
            chats=[],
            date=now,
            seq=0,
        )
        # Telegram sends a plain private text as the short form; the client then asks
        # updates.getDifference for the full message (kurigram does, for every short update).
        short = (
            None
            if file
            else raw.types.UpdateShortMessage(
                id=msg_id,
                user_id=user.user_id,
                message=text,
                pts=pts,
                pts_count=1,
                date=now,
                entities=entities,
            )
        )
        await self._push_update(bot, update, short)
        return msg_id

    async def _push_update(self, bot: SimBot, update: Any, short: Any) -> None:
        for sink in self.update_sinks:
            if await sink(bot, update, short):
                return
        await self.bot_client(bot).handle_updates(wire(update))

    async def press_button(self, user: SimUser, bot: SimBot, sent: SentMessage, data: str) -> None:
        """Deliver an inline-button press (callback query) from ``user`` on a bot message."""
        update = raw.types.Updates(
            updates=[
                raw.types.UpdateBotCallbackQuery(
                    query_id=next(self._ids),
                    user_id=user.user_id,
                    peer=raw.types.PeerUser(user_id=user.user_id),
                    msg_id=sent.message_id,
                    chat_instance=1,
                    data=data.encode(),
                )
            ],
            users=[user.raw_user(), bot.raw_user()],
            chats=[],
            date=int(time.time()),
            seq=0,
        )
        await self._push_update(bot, update, None)

    def replies(self, user: SimUser) -> list[SentMessage]:
        return [m for m in self.sent if m.chat_id == user.user_id]

    async def wait_replies(
        self, user: SimUser, count: int, timeout: float = 5.0
    ) -> list[SentMessage]:
        """Wait until ``user`` has at least ``count`` replies (event driven; fails after timeout)."""
        async with asyncio.timeout(timeout):
            while len(self.replies(user)) < count:
                self._sent_event.clear()
                await self._sent_event.wait()
        return self.replies(user)

    @staticmethod
    def _command_entities(text: str) -> list[raw.base.MessageEntity] | None:
        if not text.startswith("/"):
            return None
        length = len(text.split()[0])
        return [raw.types.MessageEntityBotCommand(offset=0, length=length)]

    @staticmethod
    def _private_key(key: tuple[int, int]) -> int:
        # Private chats are keyed by a synthetic peer key that cannot collide with channel chat ids.
        return key[0] * 10_000_000_000 + key[1] % 10_000_000_000

    def _next_private_id(self, key: tuple[int, int]) -> int:
        return next(self._ids) + 1000

    # ------------------------------------------------------------------ session plumbing
    def attach(self, session: SimSession) -> None:
        self._sessions.add(session)

    def detach(self, session: SimSession) -> None:
        self._sessions.discard(session)

    async def _bot_of(self, session: SimSession) -> SimBot | None:
        bot_id = await session.client.storage.user_id()
        return self.bots.get(bot_id) if bot_id else None

    def _counted_bot(self, bot: SimBot | None, query: TLObject[Any]) -> int:
        """Whose request this is: the session's bot, or for a login the bot of its token, so a
        test can tell which bots logged in (0: a session before any login, e.g. GetConfig)."""
        if bot is not None:
            return bot.bot_id
        found = self._bot_by_token(getattr(query, "bot_auth_token", None))
        return found.bot_id if found is not None else 0

    def _bot_by_token(self, token: object) -> SimBot | None:
        return next((b for b in self.bots.values() if b.token == token), None)

    async def handle(self, session: SimSession, query: TLObject[Any]) -> Any:
        while isinstance(
            query, raw.functions.InvokeWithoutUpdates | raw.functions.InvokeWithTakeout
        ):
            query = query.query
        name = ".".join(query.QUALNAME.split(".")[1:])
        bot = await self._bot_of(session)
        client_name = session.client.name
        self.counts[(name, client_name)] += 1
        self.bot_counts[(name, self._counted_bot(bot, query))] += 1
        self.calls.append(
            Call(
                name,
                bot.bot_id if bot else None,
                client_name,
                session.dc_id,
                session.is_media,
                getattr(query, "offset", None),
                getattr(query, "limit", None),
                bool(getattr(query, "precise", False)),
            )
        )
        if bot is not None and bot.offline:
            raise ConnectionResetError("simulated network failure")
        self.inflight[name] += 1
        self.max_inflight[name] = max(self.max_inflight[name], self.inflight[name])
        try:
            if self.rtt:
                await asyncio.sleep(self.rtt)
            instead = self._apply_faults(name, bot, query, session.dc_id)
            if instead is not None:
                return wire(instead)
            handler: Callable[..., Any] | None = getattr(self, "on_" + name.replace(".", "_"), None)
            if handler is None:
                self._err(query, 400, "METHOD_NOT_SIMULATED")
            result = handler(session, bot, query)
            if asyncio.iscoroutine(result):
                result = await result
        finally:
            self.inflight[name] -= 1
        if isinstance(result, bool):
            return result
        if isinstance(result, list):
            return [wire(item) for item in result]
        if isinstance(result, raw.types.upload.File):
            return result  # flat bytes payload: skip the (costly, pointless) round trip
        return wire(result)

    def _apply_faults(
        self, name: str, bot: SimBot | None, query: TLObject[Any], dc_id: int | None = None
    ) -> TLObject[Any] | None:
        """Raise the first matching fault, or return the answer it gives instead of the real one."""
        for fault in self.faults:
            if fault.method != name or (fault.times is not None and fault.times <= 0):
                continue
            if fault.bot_id is not None and (bot is None or bot.bot_id != fault.bot_id):
                continue
            if fault.dc_id is not None and dc_id != fault.dc_id:
                continue
            if fault.skip > 0:
                fault.skip -= 1
                continue
            if fault.probability < 1.0 and self._fault_rng.random() >= fault.probability:
                continue
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:  # spent faults leave the list: it stays as long as the test's
                    self.faults.remove(fault)
            if fault.kind == "oserror":
                raise ConnectionResetError("injected network error")
            if fault.kind == "drop":
                raise TimeoutError("Request timed out")  # what Session.send raises on no answer
            if fault.kind == "no_message":
                return raw.types.Updates(updates=[], users=[], chats=[], date=0, seq=0)
            if fault.kind == "bad_msg":
                # bad_msg_id is the request's msg_id: only a wire server knows it (it fills it in).
                code = fault.code if fault.code in BAD_MSG_CODES else 16
                return raw.types.BadMsgNotification(bad_msg_id=0, bad_msg_seqno=0, error_code=code)
            if fault.kind == "cdn_redirect":
                return cdn_redirect(self.home_dc)
            self._err(query, fault.code, fault.message)
        return None

    @staticmethod
    def _err(query: TLObject[Any], code: int, message: str) -> NoReturn:
        error = raw.types.RpcError(error_code=code, error_message=message)
        try:
            RPCError.raise_it(error, type(query))
        except RPCError as exc:
            setattr(exc, _RPC_ERROR_ATTR, error)  # what a wire server sends back verbatim
            raise
        raise AssertionError("RPCError.raise_it returned")  # it always raises

    def _require_bot(self, bot: SimBot | None, query: TLObject[Any]) -> SimBot:
        if bot is None:
            self._err(query, 401, "AUTH_KEY_UNREGISTERED")
        assert bot is not None
        return bot

    # ------------------------------------------------------------------ answers
    def on_Ping(self, s: SimSession, bot: SimBot | None, q: Any) -> Any:
        return raw.types.Pong(msg_id=0, ping_id=q.ping_id)

    def on_help_GetConfig(self, s: SimSession, bot: SimBot | None, q: Any) -> Any:
        options = [
            raw.types.DcOption(id=dc, ip_address="127.0.0.1", port=443) for dc in range(1, 6)
        ] + [
            raw.types.DcOption(id=dc, ip_address="127.0.0.1", port=443, media_only=True)
            for dc in range(1, 6)
        ]
        numbers: dict[str, Any] = dict.fromkeys(
            [
                "chat_size_max",
                "megagroup_size_max",
                "forwarded_count_max",
                "online_update_period_ms",
                "offline_blur_timeout_ms",
                "offline_idle_timeout_ms",
                "online_cloud_timeout_ms",
                "notify_cloud_delay_ms",
                "notify_default_delay_ms",
                "push_chat_period_ms",
                "push_chat_limit",
                "edit_time_limit",
                "revoke_time_limit",
                "revoke_pm_time_limit",
                "rating_e_decay",
                "stickers_recent_limit",
                "channels_read_media_period",
                "call_receive_timeout_ms",
                "call_ring_timeout_ms",
                "call_connect_timeout_ms",
                "call_packet_timeout_ms",
                "caption_length_max",
                "message_length_max",
                "webfile_dc_id",
            ],
            1000,
        )
        return raw.types.Config(
            date=int(time.time()),
            expires=int(time.time()) + 3600,
            test_mode=False,
            this_dc=self.home_dc,
            dc_options=options,
            dc_txt_domain_name="sim",
            me_url_prefix="https://t.me/",
            **numbers,
        )

    def on_auth_ImportBotAuthorization(self, s: SimSession, bot: SimBot | None, q: Any) -> Any:
        candidate = self._bot_by_token(q.bot_auth_token)
        if candidate is None:
            self._err(q, 400, "ACCESS_TOKEN_INVALID")
        if s.dc_id != candidate.dc_id:  # a bot logs in on its home DC only
            self._err(q, 303, f"USER_MIGRATE_{candidate.dc_id}")
        return raw.types.auth.Authorization(user=candidate.raw_user())

    def on_updates_GetState(self, s: SimSession, bot: SimBot | None, q: Any) -> Any:
        return raw.types.updates.State(pts=1, qts=0, date=int(time.time()), seq=0, unread_count=0)

    def on_updates_GetDifference(self, s: SimSession, bot: SimBot | None, q: Any) -> Any:
        bot = self._require_bot(bot, q)
        log = self._difference.get(bot.bot_id, deque())
        found = [(pts, msg, user) for pts, msg, user in log if pts > q.pts]
        users = {bot.bot_id: bot.raw_user()} | {u.user_id: u.raw_user() for _, _, u in found}
        last = max((pts for pts, _, _ in found), default=q.pts)
        state = raw.types.updates.State(
            pts=last, qts=0, date=int(time.time()), seq=0, unread_count=0
        )
        return raw.types.updates.Difference(
            new_messages=[msg for _, msg, _ in found],
            new_encrypted_messages=[],
            other_updates=[],
            chats=[],
            users=list(users.values()),
            state=state,
        )

    def on_users_GetUsers(self, s: SimSession, bot: SimBot | None, q: Any) -> Any:
        bot = self._require_bot(bot, q)
        out: list[Any] = []
        for item in q.id:
            user_id = getattr(item, "user_id", None)
            if user_id is None or user_id == bot.bot_id:
                out.append(bot.raw_user())
            elif (bot.bot_id, user_id) in self._seen and user_id in self.users:
                # Like Telegram, a bot can only look up users who have talked to it.
                out.append(self.users[user_id].raw_user())
            else:
                out.append(raw.types.UserEmpty(id=user_id))
        return out

    def on_users_GetFullUser(self, s: SimSession, bot: SimBot | None, q: Any) -> Any:
        bot = self._require_bot(bot, q)
        full = raw.types.UserFull(
            id=bot.bot_id,
            settings=raw.types.PeerSettings(),
            notify_settings=raw.types.PeerNotifySettings(),
            common_chats_count=0,
        )
        return raw.types.users.UserFull(full_user=full, chats=[], users=[bot.raw_user()])

    def on_bots_SetBotCommands(self, s: SimSession, bot: SimBot | None, q: Any) -> Any:
        return True

    def on_messages_SetTyping(self, s: SimSession, bot: SimBot | None, q: Any) -> Any:
        return True

    def on_messages_SetBotCallbackAnswer(self, s: SimSession, bot: SimBot | None, q: Any) -> Any:
        self._callback_answers.append((q.query_id, q.message or ""))
        return True

    def on_auth_ExportAuthorization(self, s: SimSession, bot: SimBot | None, q: Any) -> Any:
        bot = self._require_bot(bot, q)
        return raw.types.auth.ExportedAuthorization(
            id=bot.bot_id, bytes=b"exported-" + bytes([q.dc_id])
        )

    def on_auth_ImportAuthorization(self, s: SimSession, bot: SimBot | None, q: Any) -> Any:
        if q.bytes != b"exported-" + bytes([s.dc_id]) or q.id not in self.bots:
            self._err(q, 400, "AUTH_BYTES_INVALID")
        return raw.types.auth.Authorization(user=self.bots[q.id].raw_user())

    def _channel_for(self, bot: SimBot, input_channel: Any, q: Any) -> SimChannel:
        channel = self.channels.get(input_channel.channel_id)
        if channel is None:
            self._err(q, 400, "CHANNEL_INVALID")
        assert channel is not None
        if bot.bot_id not in channel.members:
            self._err(q, 406, "CHANNEL_PRIVATE")
        return channel

    def on_channels_GetChannels(self, s: SimSession, bot: SimBot | None, q: Any) -> Any:
        bot = self._require_bot(bot, q)
        chats: list[raw.base.Chat] = [self._channel_for(bot, ic, q).raw_channel() for ic in q.id]
        return raw.types.messages.Chats(chats=chats)

    def _raw_message(self, peer_key: int, msg: SimMessage, bot: SimBot, peer: Any) -> Any:
        media = self.files[msg.media_id].raw_media(bot.bot_id) if msg.media_id else None
        return raw.types.Message(
            id=msg.message_id,
            peer_id=peer,
            date=msg.date,
            message=msg.text,
            post=isinstance(peer, raw.types.PeerChannel) or None,
            media=media,
        )

    def on_channels_GetMessages(self, s: SimSession, bot: SimBot | None, q: Any) -> Any:
        bot = self._require_bot(bot, q)
        channel = self._channel_for(bot, q.channel, q)
        if q.channel.access_hash != channel.access_hash:
            self._err(q, 400, "CHANNEL_INVALID")
        peer = raw.types.PeerChannel(channel_id=channel.channel_id)
        out: list[raw.base.Message] = []
        for item in q.id:
            msg = self.messages.get((channel.chat_id, item.id))
            if msg is None:
                out.append(raw.types.MessageEmpty(id=item.id))
            else:
                out.append(self._raw_message(channel.chat_id, msg, bot, peer))
        return raw.types.messages.ChannelMessages(
            pts=1,
            count=len(out),
            messages=out,
            topics=[],
            chats=[channel.raw_channel()],
            users=[],
        )

    def on_messages_GetMessages(self, s: SimSession, bot: SimBot | None, q: Any) -> Any:
        bot = self._require_bot(bot, q)
        out: list[Any] = []
        users: dict[int, Any] = {bot.bot_id: bot.raw_user()}
        for item in q.id:
            found = self._private_sent.get(getattr(item, "id", 0))
            if found is None or found[1] is not bot:
                out.append(raw.types.MessageEmpty(id=getattr(item, "id", 0)))
                continue
            user, _, raw_msg = found
            users[user.user_id] = user.raw_user()
            out.append(raw_msg)
        return raw.types.messages.Messages(
            messages=out, topics=[], chats=[], users=list(users.values())
        )

    def _check_reference(
        self, bot: SimBot, media_id: int, access_hash: int, ref: bytes, q: Any
    ) -> SimFile:
        f = self.files.get(media_id)
        if f is None or f.access_hash != access_hash:
            self._err(q, 400, "FILE_ID_INVALID")
        assert f is not None
        if ref != f.file_reference(bot.bot_id):
            self._err(q, 400, "FILE_REFERENCE_EXPIRED")
        return f

    def on_messages_SendMedia(self, s: SimSession, bot: SimBot | None, q: Any) -> Any:
        bot = self._require_bot(bot, q)
        media = q.media
        inner = getattr(media, "id", None)
        if (
            not isinstance(media, raw.types.InputMediaDocument | raw.types.InputMediaPhoto)
            or inner is None
        ):
            self._err(q, 400, "MEDIA_INVALID")
        f = self._check_reference(bot, inner.id, inner.access_hash, inner.file_reference, q)
        return self._deliver(bot, q, text=q.message or "", media_id=f.media_id)

    def on_messages_SendMessage(self, s: SimSession, bot: SimBot | None, q: Any) -> Any:
        bot = self._require_bot(bot, q)
        return self._deliver(bot, q, text=q.message, media_id=None)

    def on_messages_EditMessage(self, s: SimSession, bot: SimBot | None, q: Any) -> Any:
        bot = self._require_bot(bot, q)
        return self._deliver(bot, q, text=q.message or "", media_id=None, edit_id=q.id)

    def _deliver(
        self, bot: SimBot, q: Any, *, text: str, media_id: int | None, edit_id: int | None = None
    ) -> Any:
        peer = q.peer
        now = int(time.time())
        if isinstance(peer, raw.types.InputPeerChannel):
            channel = self._channel_for(bot, peer, q)
            msg_id = edit_id or channel.next_message_id
            if edit_id is None:
                channel.next_message_id += 1
            self.messages[(channel.chat_id, msg_id)] = SimMessage(msg_id, now, media_id, text)
            raw_msg = self._raw_message(
                channel.chat_id,
                self.messages[(channel.chat_id, msg_id)],
                bot,
                raw.types.PeerChannel(channel_id=channel.channel_id),
            )
            update: Any = raw.types.UpdateNewChannelMessage(
                message=raw_msg, pts=next(self._pts), pts_count=1
            )
            return raw.types.Updates(
                updates=[update],
                users=[bot.raw_user()],
                chats=[channel.raw_channel()],
                date=now,
                seq=0,
            )
        if not isinstance(peer, raw.types.InputPeerUser) or peer.user_id not in self.users:
            self._err(q, 400, "PEER_ID_INVALID")
        user = self.users[peer.user_id]
        msg_id = edit_id or next(self._ids) + 1000
        buttons = self._buttons(getattr(q, "reply_markup", None))
        entities = tuple(type(e).__name__ for e in getattr(q, "entities", None) or ())
        self.sent.append(
            SentMessage(user.user_id, bot.bot_id, msg_id, text, buttons, media_id, entities)
        )
        self._sent_event.set()
        raw_msg = raw.types.Message(
            id=msg_id,
            peer_id=raw.types.PeerUser(user_id=user.user_id),
            from_id=raw.types.PeerUser(user_id=bot.bot_id),
            out=True,
            date=now,
            message=text,
            media=self.files[media_id].raw_media(bot.bot_id) if media_id else None,
        )
        self._private_sent[msg_id] = (user, bot, raw_msg)
        while len(self._private_sent) > self.sent.maxlen:  # type: ignore[operator]
            self._private_sent.pop(next(iter(self._private_sent)))
        update = (
            raw.types.UpdateEditMessage(message=raw_msg, pts=next(self._pts), pts_count=1)
            if edit_id
            else raw.types.UpdateNewMessage(message=raw_msg, pts=next(self._pts), pts_count=1)
        )
        return raw.types.Updates(
            updates=[update], users=[user.raw_user(), bot.raw_user()], chats=[], date=now, seq=0
        )

    @staticmethod
    def _buttons(markup: Any) -> tuple[tuple[str, str], ...]:
        if markup is None or not hasattr(markup, "rows"):
            return ()
        out: list[tuple[str, str]] = []
        for row in markup.rows:
            for button in row.buttons:
                kind = getattr(button, "type", button)
                target = getattr(kind, "url", None) or getattr(kind, "data", b"") or b""
                if isinstance(target, bytes):
                    target = target.decode(errors="replace")
                out.append((button.text, target))
        return tuple(out)

    async def on_upload_GetFile(self, s: SimSession, bot: SimBot | None, q: Any) -> Any:
        bot = self._require_bot(bot, q)
        loc = q.location
        if not isinstance(
            loc, raw.types.InputDocumentFileLocation | raw.types.InputPhotoFileLocation
        ):
            self._err(q, 400, "LOCATION_INVALID")
        f = self._check_reference(bot, loc.id, loc.access_hash, loc.file_reference, q)
        if s.dc_id != f.dc_id:
            self._err(q, 303, f"FILE_MIGRATE_{f.dc_id}")
        bad = getfile_rule_violation(q.offset, q.limit, bool(q.precise))
        if bad:
            self._err(q, 400, bad)
        data = await f.content.read(q.offset, q.limit)
        if self.bandwidth and data:
            await asyncio.sleep(len(data) / self.bandwidth)
        return raw.types.upload.File(type=raw.types.storage.FilePartial(), mtime=0, bytes=data)
