"""Telegram on loopback: an MTProto 2.0 server in front of the one simulated world.

Every DC of the world listens on two ports, a main one and a media one (Telegram's ``media_only``
addresses; ``help.getConfig`` announces both), so the server knows which connections are media
connections, as Telegram does. Per connection: the transport (:mod:`.framing`), the key exchange
(:mod:`.handshake`), then encrypted messages both ways. Requests are read by their TL types
(:mod:`.tl`), unwrapped from ``invokeWithLayer``/``initConnection``/``invokeWithoutUpdates`` and
answered by :meth:`SimulatedTelegram.handle`: nothing of Telegram's logic lives here. What this module
owns is what Telegram does *around* the logic: auth keys and which bot each is authorized for on
which DC, salts, msg_id/seq_no, pings, containers, gzip, and a :class:`.link.Link` per connection
with its bandwidth, RTT and faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import random
import struct
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import tgcrypto
from pyrogram import raw
from pyrogram.crypto.mtproto import kdf
from pyrogram.errors import RPCError
from pyrogram.raw.core import FutureSalt, FutureSalts, Int, Long

from streambot.simulator.telegram import SimBot, SimulatedTelegram, rpc_error_of
from streambot.simulator.wire import framing, tl
from streambot.simulator.wire.faults import DEFAULT_STALL_SECONDS, WireFault, pick
from streambot.simulator.wire.handshake import Handshake, HandshakeError
from streambot.simulator.wire.link import Limits, Link
from streambot.simulator.wire.rsa import RsaKey

log = logging.getLogger(__name__)

DC_IDS: tuple[int, ...] = (1, 2, 3, 4, 5)
#: Methods a key may call before it is authorized (everything else: 401 AUTH_KEY_UNREGISTERED).
UNAUTHORIZED_METHODS = frozenset(
    {
        "help.GetConfig",
        "help.GetNearestDc",
        "auth.ImportBotAuthorization",
        "auth.ImportAuthorization",
    }
)
_AUTHORIZING = (
    raw.functions.auth.ImportBotAuthorization,
    raw.functions.auth.ImportAuthorization,
)
_WRAPPERS = (
    raw.functions.InvokeWithLayer,
    raw.functions.InitConnection,
    raw.functions.InvokeWithoutUpdates,
    raw.functions.InvokeWithTakeout,
)
#: Answers (or client packets) above this size are encrypted off the event loop.
_OFFLOAD_BYTES = 16 * 1024
#: How long a second main connection waits for the first to close before it counts as duplicate.
DUPLICATE_GRACE = 0.25
#: Telegram rotates salts about hourly; the previous salt stays valid for a while.
SALT_PERIOD = 3600.0
#: Client msg_ids must lie within this window around the server clock (MTProto rules).
MSG_ID_PAST, MSG_ID_FUTURE = 300, 30


@dataclass(slots=True)
class AuthKey:
    """An auth key made on one DC, and the bot it was authorized for there (if any)."""

    key: bytes
    key_id: bytes
    dc: int
    bot_id: int | None = None
    dead: bool = False  # AUTH_KEY_DUPLICATED: unusable for good
    main_conns: set[_Connection] = field(default_factory=set)


class _CallerStorage:
    def __init__(self, bot_id: int | None) -> None:
        self._bot_id = bot_id

    async def user_id(self) -> int | None:
        return self._bot_id


class _CallerClient:
    def __init__(self, name: str, bot_id: int | None) -> None:
        self.name = name
        self.storage = _CallerStorage(bot_id)


class _Caller:
    """What :meth:`SimulatedTelegram.handle` reads from a session: the bot, its DC, media or not."""

    def __init__(self, name: str, bot_id: int | None, dc_id: int, is_media: bool) -> None:
        self.client = _CallerClient(name, bot_id)
        self.dc_id = dc_id
        self.is_media = is_media


class WireTelegram:
    """The world served over MTProto on loopback TCP, one main and one media port per DC.

    ``rtt_ms`` and ``bandwidth_mib_s`` are per connection (see :mod:`.link`); keep the world's own
    ``rtt``/``bandwidth`` at zero, or both apply.
    """

    def __init__(
        self,
        world: SimulatedTelegram,
        *,
        host: str = "127.0.0.1",
        rtt_ms: float = 0.0,
        bandwidth_mib_s: float = 0.0,
        rsa_key: RsaKey | None = None,
        dc_ids: Iterable[int] = DC_IDS,
        salt_period: float = SALT_PERIOD,
        crypto_workers: int = 2,
        seed: int | None = None,
    ) -> None:
        self.world = world
        self.host = host
        self.limits = Limits(rtt_ms, bandwidth_mib_s)
        self.rsa_key = rsa_key or RsaKey.generate()
        self._dc_ids = tuple(dc_ids)
        self._salt_period = salt_period
        self._pool = ThreadPoolExecutor(crypto_workers, thread_name_prefix="wire-crypto")
        self._rng = random.Random(seed)
        self._servers: list[asyncio.Server] = []
        self._ports: dict[tuple[int, bool], int] = {}
        self._keys: dict[tuple[int, bytes], AuthKey] = {}
        self._conns: set[_Connection] = set()
        self._update_conns: dict[int, _Connection] = {}
        self._faults: list[WireFault] = []
        self._salts: list[int] = [self._new_salt()]
        self._last_msg_id = 0
        self._conn_ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._salt_task: asyncio.Task[None] | None = None
        self.counters: Counter[str] = Counter()
        self.bytes_sent_closed = 0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        for dc in self._dc_ids:
            for media in (False, True):
                server = await asyncio.start_server(
                    self._handler(dc, media), self.host, 0, limit=framing.MAX_PACKET + 8
                )
                self._servers.append(server)
                self._ports[(dc, media)] = server.sockets[0].getsockname()[1]
        self.world.update_sinks.append(self._deliver_update)
        if self._salt_period > 0:
            self._salt_task = asyncio.get_running_loop().create_task(self._rotate_salts())

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.world.update_sinks.remove(self._deliver_update)
        if self._salt_task is not None:
            self._salt_task.cancel()
        for server in self._servers:
            server.close()
        for conn in list(self._conns):
            conn.link.close()
        for conn in list(self._conns):
            await conn.link.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> WireTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ public surface
    @property
    def dcs(self) -> dict[int, tuple[str, int]]:
        """DC id -> (host, port) of its main (non-media) address."""
        return {dc: (self.host, self._ports[(dc, False)]) for dc in self._dc_ids}

    @property
    def media_dcs(self) -> dict[int, tuple[str, int]]:
        """DC id -> (host, port) of its media-only address (announced by help.getConfig)."""
        return {dc: (self.host, self._ports[(dc, True)]) for dc in self._dc_ids}

    @property
    def rsa_public_pem(self) -> str:
        return self.rsa_key.public_pem

    def set_limits(
        self, *, rtt_ms: float | None = None, bandwidth_mib_s: float | None = None
    ) -> None:
        """Change RTT and per-connection bandwidth for every connection, open or future."""
        if rtt_ms is not None:
            if rtt_ms < 0:
                raise ValueError("rtt_ms must be >= 0")
            self.limits.rtt_ms = rtt_ms
        if bandwidth_mib_s is not None:
            if bandwidth_mib_s < 0:
                raise ValueError("bandwidth_mib_s must be >= 0 (0 = unlimited)")
            self.limits.bandwidth_mib_s = bandwidth_mib_s

    def add_wire_fault(self, fault: WireFault) -> None:
        """Misbehave on matching connections; see :mod:`.faults` for when a fault fires."""
        self._faults.append(fault)

    def clear_wire_faults(self) -> None:
        self._faults.clear()

    def rotate_salt(self, *, keep_previous: bool = False) -> int:
        """A new server salt; unless ``keep_previous``, the old one is refused from now on."""
        salt = self._new_salt()
        self._salts = [salt, self._salts[0]] if keep_previous else [salt]
        self.counters["salt_rotations"] += 1
        return salt

    def stats(self) -> dict[str, Any]:
        """Open connections by bot x DC x media, bytes sent, and protocol counters (JSON-ready)."""
        open_conns: Counter[tuple[str, int, bool]] = Counter()
        for conn in self._conns:
            bot = conn.key.bot_id if conn.key else None
            open_conns[(str(bot) if bot else "none", conn.dc, conn.media)] += 1
        return {
            "connections": [
                {"bot": bot, "dc": dc, "media": media, "count": n}
                for (bot, dc, media), n in sorted(open_conns.items())
            ],
            "bytes_sent": self.bytes_sent_closed + sum(c.link.bytes_sent for c in self._conns),
            "auth_keys": len(self._keys),
            "counters": dict(self.counters),
            "limits": {
                "rtt_ms": self.limits.rtt_ms,
                "bandwidth_mib_s": self.limits.bandwidth_mib_s,
            },
            "wire_faults": [
                {"kind": f.kind, "bot": f.bot, "dc": f.dc, "fired": f.fired, "spent": f.spent}
                for f in self._faults
            ],
        }

    def key_bot(self, dc: int, auth_key: bytes) -> int | None:
        """The bot an auth key is authorized for on ``dc`` (tests: what did the import bind?)."""
        found = self._keys.get((dc, hashlib.sha1(auth_key).digest()[-8:]))
        return found.bot_id if found else None

    # ------------------------------------------------------------------ internals used by conns
    def _new_salt(self) -> int:
        return int.from_bytes(os.urandom(8), "little", signed=True)

    async def _rotate_salts(self) -> None:
        while True:
            await asyncio.sleep(self._salt_period)
            self.rotate_salt(keep_previous=True)

    def _handler(self, dc: int, media: bool) -> Any:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = _Connection(self, reader, writer, dc, media, next(self._conn_ids))
            self._conns.add(conn)
            self.counters["connections_accepted"] += 1
            try:
                await conn.run()
            finally:
                self._conns.discard(conn)
                self.bytes_sent_closed += conn.link.bytes_sent
                if conn.key is not None:
                    conn.key.main_conns.discard(conn)
                    if self._update_conns.get(conn.key.bot_id or 0) is conn:
                        del self._update_conns[conn.key.bot_id or 0]
                await conn.link.wait_closed()

        return accept

    def _next_msg_id(self, *, response: bool) -> int:
        """Server msg_ids: time-based, strictly increasing, 1 mod 4 for answers, 3 otherwise."""
        base = int(time.time() * 2**32) & ~3
        if base <= self._last_msg_id:
            base = (self._last_msg_id & ~3) + 4
        msg_id = base | (1 if response else 3)
        self._last_msg_id = msg_id
        return msg_id

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _offload(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _deliver_update(self, bot: SimBot, update: Any, short: Any) -> bool:
        conn = self._update_conns.get(bot.bot_id)
        if conn is None or conn.link.closed.is_set():
            return False
        body = (short if short is not None else update).write()
        await conn.send_messages([(body, True)], response=False)
        self.counters["updates_short" if short is not None else "updates_full"] += 1
        return True


def _pack(
    auth: AuthKey, salt: int, session_id: bytes, msg_id: int, seq_no: int, body: bytes
) -> bytes:
    """Encrypt one server message (MTProto 2.0: x = 8 for server-to-client)."""
    inner = Long(salt) + session_id + Long(msg_id) + Int(seq_no) + Int(len(body)) + body
    padding = os.urandom(-(len(inner) + 12) % 16 + 12)
    msg_key = hashlib.sha256(auth.key[96:128] + inner + padding).digest()[8:24]
    aes_key, aes_iv = kdf(auth.key, msg_key, False)
    encrypted: bytes = tgcrypto.ige256_encrypt(inner + padding, aes_key, aes_iv)
    return auth.key_id + msg_key + encrypted


@dataclass(frozen=True, slots=True)
class _Incoming:
    salt: int
    session_id: bytes
    msg_id: int
    seq_no: int
    body: bytes


class _ProtocolError(Exception):
    """The client's packet cannot be accepted: the connection is closed (as Telegram does)."""


def _unpack(auth: AuthKey, packet: bytes) -> _Incoming:
    msg_key = packet[8:24]
    aes_key, aes_iv = kdf(auth.key, msg_key, True)
    plain = tgcrypto.ige256_decrypt(packet[24:], aes_key, aes_iv)
    if hashlib.sha256(auth.key[88:120] + plain).digest()[8:24] != msg_key:
        raise _ProtocolError("msg_key mismatch")
    salt, session_id, msg_id, seq_no, length = struct.unpack("<q8sqii", plain[:32])
    padding = len(plain) - 32 - length
    if length < 0 or not 12 <= padding <= 1024:
        raise _ProtocolError("bad message length")
    return _Incoming(salt, session_id, msg_id, seq_no, plain[32 : 32 + length])


class _Connection:
    """One client TCP connection: handshake or one MTProto session's traffic."""

    def __init__(
        self,
        server: WireTelegram,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        dc: int,
        media: bool,
        number: int,
    ) -> None:
        self.server = server
        self.reader = reader
        self.dc = dc
        self.media = media
        self.number = number
        self.link = Link(writer, server.limits)
        self.framing = framing.Framing("abridged")
        self.key: AuthKey | None = None
        self.session_id = b""
        self.seq = 0
        self.send_lock = asyncio.Lock()
        self.handshake: Handshake | None = None
        self.client_msg_ids: set[int] = set()
        self.disconnect_timer: asyncio.TimerHandle | None = None
        self.inbox: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=1024)

    # ---------------------------------------------------------------- reading
    async def run(self) -> None:
        dispatcher = asyncio.get_running_loop().create_task(self._dispatch())
        try:
            self.framing = await framing.accept(self.reader)
            loop = asyncio.get_running_loop()
            while not self.link.closed.is_set():
                packet = await self.framing.read(self.reader)
                if self.link.blackholed:
                    await self.link.closed.wait()  # read nothing more, answer nothing
                    break
                await self.inbox.put((loop.time(), packet))
        except (asyncio.IncompleteReadError, ConnectionError, framing.FramingError):
            pass
        finally:
            dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dispatcher
            if self.disconnect_timer is not None:
                self.disconnect_timer.cancel()
            self.link.close()

    async def _dispatch(self) -> None:
        while True:
            arrived, packet = await self.inbox.get()
            await self.link.delay_incoming(arrived)
            if self.link.blackholed:
                continue
            try:
                await self._packet(packet)
            except (_ProtocolError, HandshakeError) as exc:
                log.info("wire: closing DC%s connection %s: %s", self.dc, self.number, exc)
                self.server.counters["protocol_errors"] += 1
                self.link.close()
                return

    async def _packet(self, packet: bytes) -> None:
        if len(packet) < 24:
            raise _ProtocolError("short packet")
        key_id = packet[:8]
        if key_id == bytes(8):
            await self._handshake_packet(packet)
            return
        auth = self.server._keys.get((self.dc, key_id))
        if auth is None:
            self.server.counters["unknown_auth_key"] += 1
            await self.link.send(framing.transport_error(self.framing, -404))
            return
        if self.key is None:
            self.key = auth
            if not self.media:
                await self._check_duplicate(auth)
        elif self.key is not auth:
            raise _ProtocolError("auth key changed within a connection")
        if len(packet) > _OFFLOAD_BYTES:
            incoming = await self.server._offload(_unpack, auth, packet)
        else:
            incoming = _unpack(auth, packet)
        await self._message(incoming)

    async def _check_duplicate(self, auth: AuthKey) -> None:
        """Telegram: two main connections with one key invalidate it (AUTH_KEY_DUPLICATED)."""
        others = {
            c for c in auth.main_conns if not c.link.closed.is_set() and not c.link.blackholed
        }
        if others:
            # A restarting client closes its old connection just before opening the new one.
            waits = [asyncio.ensure_future(c.link.closed.wait()) for c in others]
            _, pending = await asyncio.wait(waits, timeout=DUPLICATE_GRACE)
            for w in pending:
                w.cancel()
            if pending and not auth.dead:
                auth.dead = True
                self.server.counters["auth_key_duplicated"] += 1
                log.info("wire: auth key of bot %s duplicated on DC%s", auth.bot_id, self.dc)
        auth.main_conns.add(self)

    # ---------------------------------------------------------------- handshake
    async def _handshake_packet(self, packet: bytes) -> None:
        (length,) = struct.unpack("<i", packet[16:20])
        request = tl.read_object(packet[20 : 20 + length])
        if self.handshake is None:
            self.handshake = Handshake(self.server.rsa_key)
        answer = await self.server._offload(self.handshake.answer, request)
        result = self.handshake.result
        if result is not None:
            key_id = hashlib.sha1(result.auth_key).digest()[-8:]
            self.server._keys[(self.dc, key_id)] = AuthKey(result.auth_key, key_id, self.dc)
            self.server.counters["auth_keys_created"] += 1
            self.handshake = None
        body = answer.write()
        out = bytes(8) + Long(self.server._next_msg_id(response=True)) + Int(len(body)) + body
        await self.link.send(self.framing.encode(out))

    # ---------------------------------------------------------------- encrypted messages
    async def _message(self, msg: _Incoming) -> None:
        server = self.server
        assert self.key is not None
        new_session = msg.session_id != self.session_id
        if new_session:
            self.session_id = msg.session_id
            self.seq = 0
            self.client_msg_ids.clear()
        bad = self._bad_msg(msg)
        if bad:
            server.counters["bad_msg_notifications"] += 1
            notice = raw.types.BadMsgNotification(
                bad_msg_id=msg.msg_id, bad_msg_seqno=msg.seq_no, error_code=bad
            )
            await self.send_messages([(notice.write(), False)])
            return
        replies: list[tuple[bytes, bool]] = []
        if new_session:
            created = raw.types.NewSessionCreated(
                first_msg_id=msg.msg_id,
                unique_id=int.from_bytes(os.urandom(8), "little", signed=True),
                server_salt=server._salts[0],
            )
            replies.append((created.write(), True))
        if msg.salt not in server._salts:
            server.counters["bad_server_salt"] += 1
            salt_notice = raw.types.BadServerSalt(
                bad_msg_id=msg.msg_id,
                bad_msg_seqno=msg.seq_no,
                error_code=48,
                new_server_salt=server._salts[0],
            )
            await self.send_messages([*replies, (salt_notice.write(), False)])
            return
        if replies:
            await self.send_messages(replies)
        body = tl.read_object(msg.body)
        await self._body(msg.msg_id, body, msg.seq_no)

    def _bad_msg(self, msg: _Incoming) -> int:
        """The bad_msg_notification code for a client msg_id/seq_no, or 0 if acceptable."""
        if msg.msg_id % 4:
            return 18
        if msg.msg_id in self.client_msg_ids:
            return 19
        sent = msg.msg_id / 2**32
        now = time.time()
        if sent < now - MSG_ID_PAST:
            return 16
        if sent > now + MSG_ID_FUTURE:
            return 17
        self.client_msg_ids.add(msg.msg_id)
        if len(self.client_msg_ids) > 4096:  # bounded: only recent ids matter for duplicates
            self.client_msg_ids = set(sorted(self.client_msg_ids)[-2048:])
        return 0

    async def _body(self, msg_id: int, body: Any, seq_no: int = 0) -> None:
        server = self.server
        if isinstance(body, raw.core.MsgContainer):
            server.counters["containers_received"] += 1
            for inner in body.messages:
                await self._body(inner.msg_id, inner.body, inner.seq_no)
            return
        if isinstance(body, raw.types.MsgsAck):
            server.counters["acks_received"] += len(body.msg_ids)
            return
        if isinstance(body, raw.functions.Ping | raw.functions.PingDelayDisconnect):
            if isinstance(body, raw.functions.PingDelayDisconnect):
                self._arm_disconnect(body.disconnect_delay)
            pong = raw.types.Pong(msg_id=msg_id, ping_id=body.ping_id)
            await self.send_messages([(pong.write(), True)])
            return
        if isinstance(body, raw.functions.GetFutureSalts):
            now = int(time.time())
            salts = [
                FutureSalt(now - 60, now + int(server._salt_period or 3600), s)
                for s in server._salts
            ]
            answer = FutureSalts(msg_id, now, salts[: max(1, body.num)]).write()
            await self.send_messages([(answer, False)])
            return
        if isinstance(body, raw.functions.RpcDropAnswer):
            dropped = raw.types.RpcAnswerUnknown().write()
            await self.send_messages([(tl.rpc_result(msg_id, dropped), True)])
            return
        server._spawn(self._rpc(msg_id, body, seq_no))

    def _arm_disconnect(self, delay: int) -> None:
        """ping_delay_disconnect: close the connection if no ping comes within ``delay`` s."""
        if self.disconnect_timer is not None:
            self.disconnect_timer.cancel()
        if delay > 0:
            self.disconnect_timer = asyncio.get_running_loop().call_later(delay, self._ping_timeout)

    def _ping_timeout(self) -> None:
        self.server.counters["ping_disconnects"] += 1
        self.link.close()

    async def _rpc(self, msg_id: int, body: Any, seq_no: int = 0) -> None:
        server = self.server
        auth = self.key
        assert auth is not None
        query, wants_updates = body, True
        while isinstance(query, _WRAPPERS):
            if isinstance(query, raw.functions.InvokeWithoutUpdates):
                wants_updates = False
            query = query.query
        name = tl.method_name(query)
        server.counters["requests"] += 1
        if auth.dead:
            await self._answer(msg_id, tl.rpc_error(msg_id, 406, "AUTH_KEY_DUPLICATED"))
            return
        if auth.bot_id is None and name not in UNAUTHORIZED_METHODS:
            server.counters["auth_key_unregistered"] += 1
            await self._answer(msg_id, tl.rpc_error(msg_id, 401, "AUTH_KEY_UNREGISTERED"))
            return
        bot = server.world.bots.get(auth.bot_id) if auth.bot_id else None
        caller = _Caller(bot.username if bot else "unauthorized", auth.bot_id, self.dc, self.media)
        try:
            result = await server.world.handle(caller, query)  # type: ignore[arg-type]
        except RPCError as exc:
            error = rpc_error_of(exc)
            code, message = (
                (error.error_code, error.error_message)
                if error
                else (exc.CODE or 500, exc.ID or "INTERNAL")
            )
            await self._answer(msg_id, tl.rpc_error(msg_id, code, message))
            return
        except TimeoutError:  # the world's 'drop' fault: the answer is lost
            server.counters["answers_dropped"] += 1
            return
        except ConnectionError:  # the world's 'oserror' fault or an offline bot
            server.counters["connections_reset"] += 1
            self.link.reset()
            return
        if isinstance(result, raw.types.BadMsgNotification):
            # The world's "bad_msg" fault: Telegram refuses the message itself, so the answer is
            # the service message about this msg_id (not an rpc_result), as for a real bad msg_id.
            server.counters["bad_msg_notifications"] += 1
            server.counters["bad_msg_faults"] += 1
            notice = raw.types.BadMsgNotification(
                bad_msg_id=msg_id, bad_msg_seqno=seq_no, error_code=result.error_code
            )
            await self._answer(msg_id, notice.write(), content=False)
            return
        if isinstance(query, _AUTHORIZING) and isinstance(result, raw.types.auth.Authorization):
            auth.bot_id = result.user.id
            server.counters["authorizations"] += 1
        if isinstance(query, raw.functions.help.GetConfig):
            result = self._config(result)
        if wants_updates and not self.media and auth.bot_id is not None:
            server._update_conns[auth.bot_id] = self
        is_file = isinstance(result, raw.types.upload.File)
        data = tl.write_result(result)
        await self._answer(msg_id, tl.rpc_result(msg_id, data, compress=not is_file))

    def _config(self, config: Any) -> Any:
        """help.getConfig as this server sees it: its own DC and the real ports of every DC."""
        server = self.server
        config.this_dc = self.dc
        config.dc_options = [
            raw.types.DcOption(id=dc, ip_address=server.host, port=server._ports[(dc, media)])
            if not media
            else raw.types.DcOption(
                id=dc, ip_address=server.host, port=server._ports[(dc, media)], media_only=True
            )
            for dc in server._dc_ids
            for media in (False, True)
        ]
        return config

    async def _answer(self, msg_id: int, body: bytes, *, content: bool = True) -> None:
        server = self.server
        bot = self.key.bot_id if self.key else None
        fault = pick(server._faults, bot, self.dc, self.media, server._rng)
        if fault is not None:
            server.counters[f"wire_fault_{fault.kind}"] += 1
            if fault.kind == "rst":
                self.link.reset()
                return
            if fault.kind == "blackhole":
                self.link.blackhole()
                return
            if fault.kind == "stall":
                self.link.stall(
                    fault.seconds if fault.seconds is not None else DEFAULT_STALL_SECONDS
                )
            else:
                self.link.drip(fault.seconds)
        await self.send_messages([(body, content)])

    # ---------------------------------------------------------------- writing
    async def send_messages(
        self, messages: list[tuple[bytes, bool]], *, response: bool = True
    ) -> None:
        """Send (body, content-related) messages, several at once as one msg_container."""
        if self.key is None or self.link.closed.is_set():
            return
        server = self.server
        async with self.send_lock:  # msg_ids leave in the order they were allocated
            numbered = []
            for body, content in messages:
                seq_no = self.seq * 2 + 1 if content else self.seq * 2
                if content:
                    self.seq += 1
                numbered.append((server._next_msg_id(response=response), seq_no, body))
            if len(numbered) == 1:
                msg_id, seq_no, body = numbered[0]
            else:
                body = tl.container(numbered)
                msg_id, seq_no = server._next_msg_id(response=response), self.seq * 2
                server.counters["containers_sent"] += 1
            args = (self.key, server._salts[0], self.session_id, msg_id, seq_no, body)
            if len(body) > _OFFLOAD_BYTES:
                payload = await server._offload(_pack, *args)
            else:
                payload = _pack(*args)
            await self.link.send(self.framing.encode(payload))


__all__ = ["DC_IDS", "AuthKey", "WireTelegram"]
