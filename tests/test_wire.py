"""Telegram on the wire: pyrogram's whole network stack against the simulator's MTProto server.

TCP framing, the DH key exchange, AES-IGE, msg_ids, salts, pings, containers, gzip, per-DC
authorization and updates all run for real here. The server runs in the test's event loop (the
``sim`` fixture); these tests claim behaviour, never timing or CPU, except where a lower bound is
the behaviour (a lost answer costs the whole request timeout). Each test runs twice: against a
server in the test's event loop and against ``python -m streambot simulator`` in its own process
(driven through the control API); what only one of them offers is asked for with ``needs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pyrogram
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyrogram import filters, raw
from pyrogram.crypto import mtproto
from pyrogram.errors import (
    AuthKeyDuplicated,
    AuthKeyUnregistered,
    FileMigrate,
    FileReferenceExpired,
)
from pyrogram.file_id import FileId
from pyrogram.handlers import MessageHandler
from pyrogram.raw.core import Message

from streambot.simulator.content import synthetic_bytes
from streambot.simulator.wire.client import pointed_at, route
from streambot.simulator.wire.faults import WireFault, WireFaultError, pick
from streambot.simulator.wire.framing import Framing, Transport
from streambot.simulator.wire.handshake import is_prime
from streambot.simulator.wire.rsa import RsaKey
from streambot.simulator.wire.server import AuthKey, WireTelegram, _pack, _unpack
from tests.helpers import eventually
from tests.wire_harness import (
    MIB,
    InLoopSim,
    WireSim,
    in_loop_sim,
    make_client,
    needs,
    pointed,
    process_sim,
    stop_client,
)


@pytest.fixture(params=["in_loop", "process"])
async def sim(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[WireSim]:
    if request.param == "process":
        with process_sim(tmp_path_factory.mktemp("simulator")) as p, pointed(p):
            yield p
        return
    async with in_loop_sim() as s:
        with pointed(s):
            yield s


async def file_location(client: Any, sim: WireSim, name: str) -> tuple[Any, int]:
    msg = await client.get_messages(sim.chat_id, sim.files[name].message_id)
    fid = FileId.decode(msg.document.file_id)
    loc = raw.types.InputDocumentFileLocation(
        id=fid.media_id,
        access_hash=fid.access_hash,
        file_reference=fid.file_reference,
        thumb_size="",
    )
    return loc, fid.dc_id


@contextlib.asynccontextmanager
async def media_session(
    sim: WireSim, tmp_path: Path, name: str = "home.bin"
) -> AsyncIterator[tuple[pyrogram.Client, Any, Any]]:
    """A started client, the location of file ``name`` and a media session on its DC."""
    client = make_client(sim, tmp_path)
    await client.start()
    try:
        loc, dc = await file_location(client, sim, name)
        yield client, loc, await client.get_session(dc, is_media=True)
    finally:
        await stop_client(client)


async def download(session: Any, loc: Any, size: int, between: Any = None) -> bytes:
    out = bytearray()
    for i, offset in enumerate(range(0, size, MIB)):
        if between is not None:
            between(i)
        answer = await session.invoke(
            raw.functions.upload.GetFile(location=loc, offset=offset, limit=MIB), timeout=10
        )
        assert isinstance(answer, raw.types.upload.File)
        out += answer.bytes
    return bytes(out)


# ---------------------------------------------------------------------- login and files
async def test_login_runs_the_key_exchange_and_a_second_start_reuses_the_session_file(
    sim: WireSim, tmp_path: Path
) -> None:
    client = make_client(sim, tmp_path)
    await client.start()
    me = await client.get_me()
    await stop_client(client)
    assert me.id == sim.bot_id
    assert sim.stats()["counters"]["auth_keys_created"] == 1
    assert sim.count("auth.ImportBotAuthorization") == 1
    assert (tmp_path / "bot.session").exists()

    again = make_client(sim, tmp_path)
    await again.start()
    assert (await again.get_me()).id == sim.bot_id
    await stop_client(again)
    # The stored auth key is still known and authorized: no new key, no second login.
    assert sim.stats()["counters"]["auth_keys_created"] == 1
    assert sim.count("auth.ImportBotAuthorization") == 1


async def test_get_messages_and_byte_exact_getfile_across_mib_edges_with_a_salt_rotation(
    sim: WireSim, tmp_path: Path
) -> None:
    needs(sim, "rotate_salt")
    async with media_session(sim, tmp_path) as (client, loc, session):
        info = sim.files["home.bin"]
        salts_before = sim.stats()["counters"].get("bad_server_salt", 0)
        data = await download(
            session, loc, info.size, between=lambda i: sim.rotate_salt() if i == 2 else None
        )
        assert (
            hashlib.sha256(data).digest()
            == hashlib.sha256(synthetic_bytes(info.seed, 0, info.size)).digest()
        )
        # The rotation cost exactly one bad_server_salt + resend on the media connection.
        assert sim.stats()["counters"]["bad_server_salt"] == salts_before + 1
        # A file of exactly 2 MiB: the read at its end is empty, as pyrogram's get_file expects.
        exact_loc, _ = await file_location(client, sim, "exact.bin")
        tail = await session.invoke(
            raw.functions.upload.GetFile(location=exact_loc, offset=2 * MIB, limit=MIB)
        )
        assert tail.bytes == b""


async def test_a_file_on_a_foreign_dc_goes_through_a_new_key_and_export_import(
    sim: WireSim, tmp_path: Path
) -> None:
    needs(sim, "dc4_file")
    client = make_client(sim, tmp_path)
    await client.start()
    try:
        loc, dc = await file_location(client, sim, "far.bin")
        assert dc == 4
        home = await client.get_session(2, is_media=True)
        with pytest.raises(FileMigrate) as migrate:
            await home.invoke(raw.functions.upload.GetFile(location=loc, offset=0, limit=MIB))
        assert migrate.value.value == 4
        session = await client.get_session(4, is_media=True)
        info = sim.files["far.bin"]
        assert await download(session, loc, info.size) == synthetic_bytes(info.seed, 0, info.size)
    finally:
        await stop_client(client)
    assert sim.stats()["counters"]["auth_keys_created"] == 2  # home DC, then DC 4
    assert sim.count("auth.ExportAuthorization") >= 1
    assert sim.count("auth.ImportAuthorization") >= 1


async def test_a_key_never_authorized_gets_auth_key_unregistered(
    sim: WireSim, tmp_path: Path
) -> None:
    """The poisoned-session case: a DC-4 key whose authorization import never happened."""
    needs(sim, "dc4_file")
    client = make_client(sim, tmp_path)
    await client.start()
    try:
        loc, _ = await file_location(client, sim, "far.bin")
        session = await client.get_session(4, export_authorization=False)
        with pytest.raises(AuthKeyUnregistered):
            await session.invoke(raw.functions.upload.GetFile(location=loc, offset=0, limit=MIB))
    finally:
        await stop_client(client)
    assert sim.stats()["counters"]["auth_key_unregistered"] == 1


async def test_a_bot_of_another_dc_is_migrated_at_login(sim: WireSim, tmp_path: Path) -> None:
    needs(sim, "far_bot")
    client = make_client(sim, tmp_path, name="far", token=sim.far_bot_token)
    await client.start()
    try:
        assert (await client.get_me()).id == sim.far_bot_id
        assert await client.storage.dc_id() == 4
    finally:
        await stop_client(client)
    # DC 2 answered USER_MIGRATE_4; the login was repeated on a new DC-4 key.
    assert sim.count("auth.ImportBotAuthorization") == 2
    assert sim.stats()["counters"]["auth_keys_created"] == 2


async def test_two_main_connections_with_one_key_kill_it(sim: WireSim, tmp_path: Path) -> None:
    first = make_client(sim, tmp_path)
    await first.start()
    copy = make_client(
        sim, tmp_path, name="copy", session_string=await first.export_session_string()
    )
    try:
        with pytest.raises(AuthKeyDuplicated):
            await copy.start()
        # The first process's key is dead as well: Telegram wants a new key and a new login.
        with pytest.raises(AuthKeyDuplicated):
            await first.invoke(raw.functions.updates.GetState())
    finally:
        await stop_client(first)
    assert sim.stats()["counters"]["auth_key_duplicated"] == 1


async def test_media_connections_may_share_the_main_key(sim: WireSim, tmp_path: Path) -> None:
    async with media_session(sim, tmp_path) as (client, loc, session):
        assert session.auth_key == await client.storage.auth_key()
        answer = await session.invoke(
            raw.functions.upload.GetFile(location=loc, offset=0, limit=4096)
        )
        assert len(answer.bytes) == 4096
    assert "auth_key_duplicated" not in sim.stats()["counters"]


# ---------------------------------------------------------------------- updates
async def test_start_arrives_as_a_short_update_and_is_answered_through_get_difference(
    sim: WireSim, tmp_path: Path
) -> None:
    client = make_client(sim, tmp_path, no_updates=False)

    async def on_start(c: Any, message: Any) -> None:
        await message.reply_text(f"hello {message.from_user.id}")

    client.add_handler(MessageHandler(on_start, filters.command("start") & filters.private))
    await client.start()
    try:
        await sim.send_text(sim.user_id, "/start")
        assert await sim.wait_replies(sim.user_id, 1, timeout=10) == [f"hello {sim.user_id}"]
    finally:
        await stop_client(client)
    assert sim.stats()["counters"]["updates_short"] == 1
    assert sim.count("updates.GetDifference") == 1


# ---------------------------------------------------------------------- wire faults
async def test_an_rst_with_a_request_in_flight_costs_the_whole_request_timeout(
    sim: WireSim, tmp_path: Path
) -> None:
    """Known gap (issue 13): pyrogram reconnects, but the orphaned request waits its timeout."""
    async with media_session(sim, tmp_path) as (_client, loc, session):
        accepted = sim.stats()["counters"]["connections_accepted"]
        sim.add_wire_fault("rst", bot=sim.bot_id, media=True)
        started = time.monotonic()
        answer = await session.invoke(
            raw.functions.upload.GetFile(location=loc, offset=0, limit=MIB), timeout=1.5
        )
        elapsed = time.monotonic() - started
        assert answer.bytes == synthetic_bytes(sim.files["home.bin"].seed, 0, MIB)
        assert elapsed >= 1.5  # nothing failed the request early: it ran into its timeout
        assert sim.stats()["counters"]["wire_fault_rst"] == 1
        assert sim.stats()["counters"]["connections_accepted"] > accepted  # reconnected


async def test_a_black_hole_is_only_noticed_by_the_request_timeout(
    sim: WireSim, tmp_path: Path
) -> None:
    """Known gap (issue 13): an open socket that never answers looks healthy until a timeout."""
    async with media_session(sim, tmp_path) as (_client, loc, session):
        sim.add_wire_fault("blackhole", bot=sim.bot_id, media=True)
        with pytest.raises(TimeoutError):
            await session.invoke(
                raw.functions.upload.GetFile(location=loc, offset=0, limit=MIB),
                timeout=1.0,
                retries=1,
            )
        assert session.is_started.is_set()  # pyrogram still believes in the connection
        media = [c for c in sim.stats()["connections"] if c["media"]]
        assert media  # and the server keeps the socket open


async def test_rpc_faults_of_the_world_travel_over_the_wire(sim: WireSim, tmp_path: Path) -> None:
    needs(sim, "world")
    assert isinstance(sim, InLoopSim)
    async with media_session(sim, tmp_path) as (_client, loc, session):
        sim.world.flood_wait(1)
        sim.world.expire_file_reference(next(iter(sim.world.files)))
        with pytest.raises(FileReferenceExpired):
            await session.invoke(raw.functions.upload.GetFile(location=loc, offset=0, limit=MIB))
    assert sim.world.count("upload.GetFile") == 2  # FLOOD_WAIT_1 slept through, then the error


async def test_503_bad_msg_and_cdn_redirect_reach_a_plain_invoke_and_the_connection_lives(
    sim: WireSim, tmp_path: Path
) -> None:
    """kurigram's own handling of three answers, each sent as Telegram sends it, through the
    control API for a simulator process: a -503 rpc_error is retried inside ``Session.invoke``; a
    ``bad_msg_notification`` for the request's msg_id is handed to the invoker as the result
    (logged; neither raised nor resent); ``upload.fileCdnRedirect`` is returned as it is. The
    connection outlives each, and the next GetFile on it is byte-exact."""
    async with media_session(sim, tmp_path) as (_client, loc, session):
        info = sim.files["home.bin"]

        async def get(offset: int) -> Any:
            query = raw.functions.upload.GetFile(location=loc, offset=offset, limit=MIB)
            return await session.invoke(query, timeout=10, retry_delay=0)

        before = sim.count("upload.GetFile")
        sim.add_rpc_fault("rpc_error", code=-503, message="TIMEOUT", count=2)
        answer = await get(0)
        assert answer.bytes == synthetic_bytes(info.seed, 0, MIB)
        assert sim.count("upload.GetFile") == before + 3  # two -503, then the answer

        sim.add_rpc_fault("bad_msg", code=17)
        notice = await get(MIB)
        assert isinstance(notice, raw.types.BadMsgNotification)
        assert notice.error_code == 17
        assert sim.stats()["counters"]["bad_msg_faults"] == 1
        assert (await get(MIB)).bytes == synthetic_bytes(info.seed, MIB, MIB)

        sim.add_rpc_fault("cdn_redirect")
        redirect = await get(2 * MIB)
        assert isinstance(redirect, raw.types.upload.FileCdnRedirect)
        assert (await get(2 * MIB)).bytes == synthetic_bytes(info.seed, 2 * MIB, MIB)


async def test_ping_delay_disconnect_closes_a_connection_that_stops_pinging(
    sim: WireSim, tmp_path: Path
) -> None:
    async with media_session(sim, tmp_path) as (_client, loc, session):
        accepted = sim.stats()["counters"]["connections_accepted"]
        pong = await session.send(raw.functions.PingDelayDisconnect(ping_id=7, disconnect_delay=1))
        assert pong.ping_id == 7
        # No ping within a second: the server hangs up and pyrogram reconnects.
        await eventually(lambda: sim.stats()["counters"].get("ping_disconnects", 0) == 1, 10)
        await eventually(lambda: sim.stats()["counters"]["connections_accepted"] > accepted, 10)
        answer = await session.invoke(
            raw.functions.upload.GetFile(location=loc, offset=0, limit=4096), timeout=10
        )
        assert len(answer.bytes) == 4096


# ---------------------------------------------------------------------- pieces, table-tested
def test_pointed_at_restores_pyrogram_on_exit() -> None:
    from pyrogram.connection import Connection
    from pyrogram.crypto import rsa

    key = RsaKey.generate()
    init, keys = Connection.__init__, dict(rsa.server_public_keys)
    with pointed_at({2: ("127.0.0.1", 1)}, key.public_pem):
        assert key.fingerprint in rsa.server_public_keys
        assert Connection.__init__ is not init
    assert Connection.__init__ is init
    assert rsa.server_public_keys == keys


@pytest.mark.parametrize(
    ("dc", "address", "media", "expected"),
    [
        (2, ("149.154.167.51", 443), False, ("h", 102)),  # kurigram's hard-coded first address
        (2, ("149.154.167.51", 443), True, ("h", 202)),
        (4, ("h", 202), True, ("h", 202)),  # already the simulator's (from help.getConfig)
        (4, ("127.0.0.1", 9), False, ("h", 104)),  # stale port from an earlier simulator run
        (7, ("10.0.0.1", 443), False, ("10.0.0.1", 443)),  # unknown DC: left alone
    ],
)
def test_route(dc: int, address: tuple[str, int], media: bool, expected: tuple[str, int]) -> None:
    dcs = {2: ("h", 102), 4: ("h", 104)}
    media_dcs = {2: ("h", 202), 4: ("h", 204)}
    assert route(dc, address, media, dcs, media_dcs) == expected


@pytest.mark.parametrize(
    ("address", "media", "expected"),
    [
        (("h", 202), True, ("h", 202)),  # media port from help.getConfig: kept
        (("149.154.167.51", 443), True, ("h", 102)),
        (("149.154.167.51", 443), False, ("h", 102)),
    ],
)
def test_route_knowing_only_the_main_ports(
    address: tuple[str, int], media: bool, expected: tuple[str, int]
) -> None:
    assert route(2, address, media, {2: ("h", 102)}, {}) == expected


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, False), (2, True), (91, False), (2_147_483_647, True), (2_147_483_649, False)],
)
def test_is_prime(n: int, expected: bool) -> None:
    assert is_prime(n) is expected


@pytest.mark.parametrize(
    ("size", "head"), [(4, b"\x01"), (508, b"\x7f"), (504, b"\x7e"), (4096, b"\x7f")]
)
def test_abridged_header(size: int, head: bytes) -> None:
    assert Framing("abridged").encode(bytes(size))[:1] == head


def test_wire_fault_after_count_and_filters() -> None:
    import random

    fault = WireFault.make("stall", bot=7, after=2, count=1, media=True)
    rng = random.Random(1)
    fired = [
        pick([fault], bot, 2, media, rng) is not None
        for bot, media in [(7, True), (8, True), (7, False), (7, True), (7, True), (7, True)]
    ]
    assert fired == [False, False, False, False, True, False]
    sometimes = WireFault.make("rst", count=None, probability=0.5)
    hits = sum(pick([sometimes], None, 2, False, rng) is not None for _ in range(1000))
    assert 400 < hits < 600  # seeded: the same run every time
    with pytest.raises(WireFaultError):
        WireFault.make("meteor")
    with pytest.raises(WireFaultError):
        WireFault.make("rst", probability=2)


async def test_server_lists_one_main_and_one_media_port_per_dc() -> None:
    from streambot.simulator import SimulatedTelegram

    async with WireTelegram(SimulatedTelegram()) as server:
        ports = {p for _, p in server.dcs.values()} | {p for _, p in server.media_dcs.values()}
        assert sorted(server.dcs) == [1, 2, 3, 4, 5]
        assert len(ports) == 10
        server.set_limits(rtt_ms=20, bandwidth_mib_s=5)
        assert server.stats()["limits"] == {"rtt_ms": 20, "bandwidth_mib_s": 5}
        with pytest.raises(ValueError, match="rtt_ms"):
            server.set_limits(rtt_ms=-1)
    await asyncio.sleep(0)


# ---------------------------------------------------------------------- the wire model
async def test_rtt_applies_to_every_packet_of_a_login(sim: WireSim, tmp_path: Path) -> None:
    """Key exchange (3 round trips), Ping, InitConnection, the salt resend and the login."""
    sim.set_limits(rtt_ms=100)
    client = make_client(sim, tmp_path)
    started = time.monotonic()
    await client.start()
    elapsed = time.monotonic() - started
    await stop_client(client)
    assert elapsed >= 7 * 0.1


async def test_bandwidth_is_shared_by_the_answers_on_one_connection(
    sim: WireSim, tmp_path: Path
) -> None:
    async with media_session(sim, tmp_path) as (_client, loc, session):
        sim.set_limits(bandwidth_mib_s=8)
        started = time.monotonic()
        answers = await asyncio.gather(
            *(
                session.invoke(raw.functions.upload.GetFile(location=loc, offset=o, limit=MIB))
                for o in (0, MIB)
            )
        )
        elapsed = time.monotonic() - started
        assert [len(a.bytes) for a in answers] == [MIB, MIB]
        # 2 MiB through one 8 MiB/s pipe: 0.25 s at least (per request it would be 0.125 s).
        assert elapsed >= 0.25


async def test_a_stall_holds_the_answer_then_delivers_it_intact(
    sim: WireSim, tmp_path: Path
) -> None:
    async with media_session(sim, tmp_path) as (_client, loc, session):
        sim.add_wire_fault("stall", bot=sim.bot_id, media=True, seconds=1.0)
        started = time.monotonic()
        answer = await session.invoke(
            raw.functions.upload.GetFile(location=loc, offset=MIB, limit=MIB), timeout=10
        )
        assert time.monotonic() - started >= 1.0
        assert answer.bytes == synthetic_bytes(sim.files["home.bin"].seed, MIB, MIB)


async def test_a_drip_trickles_the_answer(sim: WireSim, tmp_path: Path) -> None:
    async with media_session(sim, tmp_path) as (_client, loc, session):
        sim.add_wire_fault("drip", bot=sim.bot_id, media=True, seconds=0.5)
        started = time.monotonic()
        answer = await session.invoke(
            raw.functions.upload.GetFile(location=loc, offset=0, limit=8192), timeout=10
        )
        # 8 KiB (+ MTProto overhead) at 8 KiB/s: most of the 0.5 s drip window.
        assert time.monotonic() - started >= 0.45
        assert answer.bytes == synthetic_bytes(sim.files["home.bin"].seed, 0, 8192)


async def test_intermediate_transport_is_served(sim: WireSim, tmp_path: Path) -> None:
    from pyrogram.connection.transport import TCPIntermediate

    client = make_client(sim, tmp_path, protocol_factory=TCPIntermediate)
    await client.start()
    try:
        assert (await client.get_me()).id == sim.bot_id
    finally:
        await stop_client(client)


# ---------------------------------------------------------------------- properties
TRANSPORTS: tuple[Transport, ...] = ("abridged", "intermediate")


@given(words=st.integers(min_value=0, max_value=70_000), transport=st.sampled_from(TRANSPORTS))
@settings(max_examples=60)
async def test_framing_reads_back_what_it_encodes(words: int, transport: Transport) -> None:
    payload = bytes(range(256)) * (words * 4 // 256) + bytes(words * 4 % 256)
    framing = Framing(transport)
    reader = asyncio.StreamReader()
    reader.feed_data(framing.encode(payload) * 2)
    reader.feed_eof()
    assert await framing.read(reader) == payload
    assert await framing.read(reader) == payload


@given(
    ping_id=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    salt=st.integers(-(2**63), 2**63 - 1),
)
@settings(max_examples=40)
def test_server_and_pyrogram_mtproto_agree(ping_id: int, salt: int) -> None:
    """Our packing against pyrogram's own ``crypto.mtproto``, both directions, no network."""
    key = hashlib.sha512(b"k").digest() * 4
    auth = AuthKey(key, hashlib.sha1(key).digest()[-8:], 2)
    session_id = b"\x01" * 8
    ping = raw.functions.Ping(ping_id=ping_id)
    message = Message(ping, 4 << 32, 1, len(ping.write()))
    client_packet = mtproto.pack(message, salt, session_id, key, auth.key_id)
    incoming = _unpack(auth, client_packet)
    assert (incoming.salt, incoming.session_id, incoming.body) == (salt, session_id, ping.write())
    pong = raw.types.Pong(msg_id=1, ping_id=ping.ping_id).write()
    server_packet = _pack(auth, salt, session_id, (1 << 32) | 1, 1, pong)
    answer = mtproto.unpack(BytesIO(server_packet), session_id, key, auth.key_id)
    assert answer.body.ping_id == ping_id
