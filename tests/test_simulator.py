"""The offline Telegram, driven through the real pyrogram ``Client``: every promise DESIGN.md makes of it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest
from pyrogram import Client, enums, filters, raw, types
from pyrogram.errors import (
    AccessTokenInvalid,
    ChannelPrivate,
    FileMigrate,
    FileReferenceExpired,
    FloodWait,
    LimitInvalid,
    OffsetInvalid,
)
from pyrogram.file_id import FileId
from pyrogram.handlers import MessageHandler
from pyrogram.handlers.handler import Handler

from streambot.simulator import (
    MEDIA_KINDS,
    DiskContent,
    SimBot,
    SimulatedTelegram,
    SyntheticContent,
    getfile_rule_violation,
    offline,
)
from streambot.simulator.content import PATTERN_PERIOD, synthetic_bytes

KIB = 1024
MIB = 1024 * 1024
GIB = 1024 * MIB
#: A channel created after 2024: its bot-API id is below -100<2^31>, the range pyrogram 2.0.106 rejected.
NEW_CHANNEL_RAW_ID = 2_600_000_000


@contextlib.asynccontextmanager
async def started(
    telegram: SimulatedTelegram,
    bot: SimBot,
    *,
    name: str | None = None,
    workdir: Path | None = None,
    no_updates: bool = True,
    sleep_threshold: int = 0,
    handlers: Sequence[Handler] = (),
) -> AsyncIterator[Client]:
    """A real pyrogram Client for ``bot``, started inside the running loop against ``telegram``.

    Handlers are added before ``start()``: added later, pyrogram installs them from a task, and an
    update delivered right away could be dispatched before they exist.
    """
    with offline(telegram):
        client = Client(
            name or bot.username,
            api_id=1,
            api_hash="0" * 32,
            bot_token=bot.token,
            in_memory=workdir is None,
            workdir=str(workdir) if workdir else ".",
            no_updates=no_updates,
            sleep_threshold=sleep_threshold,
        )
        for handler in handlers:
            client.add_handler(handler)
        await client.start()
        try:
            yield client
        finally:
            if client.is_connected:
                await client.stop()


def location(media: Any) -> raw.types.InputDocumentFileLocation:
    """The GetFile location a streamer derives from a parsed message's file id."""
    fid = FileId.decode(media.file_id)
    return raw.types.InputDocumentFileLocation(
        id=fid.media_id,
        access_hash=fid.access_hash,
        file_reference=fid.file_reference,
        thumb_size="",
    )


def get_file(loc: Any, offset: int, limit: int, precise: bool = False) -> Any:
    return raw.functions.upload.GetFile(location=loc, offset=offset, limit=limit, precise=precise)


class Scene:
    """A simulated Telegram with a main bot, a worker bot, an outsider bot and a new-style channel."""

    def __init__(self, **telegram_kw: Any) -> None:
        self.tg = SimulatedTelegram(**telegram_kw)
        self.main = self.tg.add_bot("main_bot")
        self.worker = self.tg.add_bot("worker_bot")
        self.outsider = self.tg.add_bot("outsider_bot")
        self.channel = self.tg.add_channel(
            "bin", channel_id=NEW_CHANNEL_RAW_ID, members=[self.main, self.worker]
        )
        self.user = self.tg.add_user("Alice")

    def store(self, content: Any, name: str = "f.bin", **kw: Any) -> int:
        f = self.tg.add_file(content, name=name, **kw)
        return self.tg.post_file(self.channel, f)


@pytest.fixture
def scene() -> Scene:
    return Scene()


# ---------------------------------------------------------------------------- clients and messages


async def test_client_starts_and_stops(scene: Scene) -> None:
    """A real Client logs in as the simulated bot and disconnects on stop."""
    async with started(scene.tg, scene.main) as client:
        assert client.is_connected
        assert client.me.id == scene.main.bot_id
        assert client.me.is_bot
        assert client.me.username == "main_bot"
    assert not client.is_connected
    assert scene.tg.count("auth.ImportBotAuthorization") == 1
    # The login counts for the bot whose token it carried (before it, the session is no bot's).
    assert scene.tg.bot_counts[("auth.ImportBotAuthorization", scene.main.bot_id)] == 1


async def test_get_messages_on_a_new_channel_id(scene: Scene) -> None:
    """get_messages works on a channel id below -1002147483648 and parses the stored document."""
    msg_id = scene.store(SyntheticContent(12345, seed=1), name="movie.bin")
    assert scene.channel.chat_id < -1002147483648
    async with started(scene.tg, scene.main) as client:
        msg = await client.get_messages(scene.channel.chat_id, msg_id)
    assert msg.id == msg_id
    assert msg.chat.id == scene.channel.chat_id
    assert msg.document.file_name == "movie.bin"
    assert msg.document.file_size == 12345


async def test_missing_message_is_empty(scene: Scene) -> None:
    """A message id that was never posted (or was deleted) comes back as an empty message."""
    msg_id = scene.store(SyntheticContent(10, seed=1))
    scene.tg.delete_message(scene.channel, msg_id)
    async with started(scene.tg, scene.main) as client:
        msg = await client.get_messages(scene.channel.chat_id, msg_id)
    assert msg.empty


# ---------------------------------------------------------------------------- content


async def test_synthetic_five_gib_file_is_served_beyond_four_gib_without_allocating(
    scene: Scene,
) -> None:
    """A 5 GiB synthetic file reports its size and serves a block at 4.5 GiB; RSS barely moves."""
    size = 5 * GIB
    msg_id = scene.store(SyntheticContent(size, seed=3), name="huge.mkv")
    process = psutil.Process()
    async with started(scene.tg, scene.main) as client:
        msg = await client.get_messages(scene.channel.chat_id, msg_id)
        assert msg.document.file_size == size
        loc = location(msg.document)
        rss_before = process.memory_info().rss
        offset = 4 * GIB + 512 * MIB
        block = await client.invoke(get_file(loc, offset, MIB))
        tail = await client.invoke(get_file(loc, size - MIB, MIB))
        past_end = await client.invoke(get_file(loc, size, MIB))
        rss_after = process.memory_info().rss
    assert block.bytes == synthetic_bytes(3, offset, MIB)
    assert block.bytes != synthetic_bytes(3, offset + 4096, MIB)  # offsets really matter
    assert len(tail.bytes) == MIB
    assert past_end.bytes == b""
    assert rss_after - rss_before < 64 * MIB


def test_synthetic_bytes_are_deterministic_and_period_is_not_a_mib_divisor() -> None:
    """The pattern repeats with a period that no power of two divides, so misplaced blocks differ."""
    assert synthetic_bytes(9, 5 * MIB, 4096) == synthetic_bytes(9, 5 * MIB, 4096)
    assert synthetic_bytes(9, 0, 4096) != synthetic_bytes(10, 0, 4096)
    assert synthetic_bytes(9, 0, 4096) == synthetic_bytes(9, PATTERN_PERIOD, 4096)
    assert synthetic_bytes(9, 0, 4096) != synthetic_bytes(9, MIB, 4096)
    assert PATTERN_PERIOD % 2 == 1
    # A read spanning the pattern's wrap point is contiguous.
    joined = synthetic_bytes(9, PATTERN_PERIOD - 10, 10) + synthetic_bytes(9, PATTERN_PERIOD, 10)
    assert synthetic_bytes(9, PATTERN_PERIOD - 10, 20) == joined
    assert len(synthetic_bytes(9, 0, 3 * PATTERN_PERIOD)) == 3 * PATTERN_PERIOD


async def test_disk_file_bytes_match_and_are_read_lazily(scene: Scene, tmp_path: Path) -> None:
    """A disk-backed file serves the file's bytes, read per request: edits after adding show up."""
    path = tmp_path / "clip.bin"
    original = bytes(range(256)) * (6 * KIB)  # 1.5 MiB
    path.write_bytes(original)
    msg_id = scene.store(DiskContent.of(path), name="clip.bin")
    async with started(scene.tg, scene.main) as client:
        msg = await client.get_messages(scene.channel.chat_id, msg_id)
        loc = location(msg.document)
        first = await client.invoke(get_file(loc, 0, MIB))
        second = await client.invoke(get_file(loc, MIB, MIB))
        assert first.bytes + second.bytes == original
        changed = b"\xff" * len(original)
        path.write_bytes(changed)
        again = await client.invoke(get_file(loc, 0, MIB))
    assert again.bytes == changed[:MIB]
    assert msg.document.file_size == len(original)


# ---------------------------------------------------------------------------- GetFile rules

GETFILE_CASES = [
    # offset, limit, precise, expected error id (None = allowed)
    (0, MIB, False, None),
    (MIB, 512 * KIB, False, None),
    (MIB - 4096, 4096, False, None),
    (4096, 4096, False, None),
    (1000, 4096, False, "OFFSET_INVALID"),
    (-4096, 4096, False, "OFFSET_INVALID"),
    (0, 3000, False, "LIMIT_INVALID"),
    (0, 0, False, "LIMIT_INVALID"),
    (0, 12 * KIB, False, "LIMIT_INVALID"),  # 1 MiB is not a multiple of 12 KiB
    (0, 2 * MIB, False, "LIMIT_INVALID"),
    (MIB - 4096, 8192, False, "LIMIT_INVALID"),  # crosses a 1 MiB boundary
    (512 * KIB, MIB, False, "LIMIT_INVALID"),  # crosses a 1 MiB boundary
    (1024, 3 * KIB, True, None),  # precise: 1 KiB granularity, any multiple
    (1024, 3 * KIB, False, "OFFSET_INVALID"),
    (4096, 3 * KIB, False, "LIMIT_INVALID"),
    (512, 1024, True, "OFFSET_INVALID"),
    (0, 1000, True, "LIMIT_INVALID"),
    (0, MIB + 1024, True, "LIMIT_INVALID"),
    (MIB - 1024, 2048, True, "LIMIT_INVALID"),  # precise requests may not cross 1 MiB either
]


@pytest.mark.parametrize(("offset", "limit", "precise", "expected"), GETFILE_CASES)
def test_getfile_rules_table(offset: int, limit: int, precise: bool, expected: str | None) -> None:
    """Telegram's documented upload.getFile offset/limit rules, case by case."""
    assert getfile_rule_violation(offset, limit, precise) == expected


async def test_getfile_rules_are_enforced_through_the_client(scene: Scene) -> None:
    """Violations surface as pyrogram's own OffsetInvalid / LimitInvalid; valid requests pass."""
    msg_id = scene.store(SyntheticContent(4 * MIB, seed=5))
    errors = {"OFFSET_INVALID": OffsetInvalid, "LIMIT_INVALID": LimitInvalid}
    async with started(scene.tg, scene.main) as client:
        loc = location((await client.get_messages(scene.channel.chat_id, msg_id)).document)
        for offset, limit, precise, expected in GETFILE_CASES:
            if offset < 0:
                continue  # the TL layer cannot even encode a negative offset as a long
            query = get_file(loc, offset, limit, precise)
            if expected is None:
                result = await client.invoke(query)
                assert result.bytes == synthetic_bytes(5, offset, limit)
            else:
                with pytest.raises(errors[expected]):
                    await client.invoke(query)


# ---------------------------------------------------------------------------- latency and bandwidth


async def test_garbled_handshake_is_read_by_pyrogram_and_fails_its_start() -> None:
    """A proxy answering junk: pyrogram's own reader fails on it as on the real network."""
    scene = Scene()
    scene.tg.garbled_handshake = True
    with pytest.raises(KeyError):
        async with started(scene.tg, scene.main):
            pass


async def test_rtt_delays_every_request() -> None:
    """With rtt=0.05 s, four sequential requests cannot finish in under 0.2 s."""
    scene = Scene(rtt=0.05)
    msg_id = scene.store(SyntheticContent(MIB, seed=1))
    async with started(scene.tg, scene.main) as client:
        loc = location((await client.get_messages(scene.channel.chat_id, msg_id)).document)
        t0 = time.monotonic()
        for i in range(4):
            await client.invoke(get_file(loc, i * 4096, 4096))
        elapsed = time.monotonic() - t0
    assert elapsed >= 0.2 - 0.005


async def test_bandwidth_limits_getfile_payloads() -> None:
    """At 4 MiB/s, fetching 1 MiB of payload cannot take less than 0.25 s."""
    scene = Scene(bandwidth=4 * MIB)
    msg_id = scene.store(SyntheticContent(MIB, seed=1))
    async with started(scene.tg, scene.main) as client:
        loc = location((await client.get_messages(scene.channel.chat_id, msg_id)).document)
        t0 = time.monotonic()
        for i in range(4):
            await client.invoke(get_file(loc, i * 256 * KIB, 256 * KIB))
        elapsed = time.monotonic() - t0
    assert elapsed >= 0.25 - 0.005


# ---------------------------------------------------------------------------- faults


async def test_flood_wait_raises_with_its_value(scene: Scene) -> None:
    """An injected FLOOD_WAIT_7 reaches the caller as FloodWait(value=7), once; then requests pass."""
    msg_id = scene.store(SyntheticContent(MIB, seed=1))
    async with started(scene.tg, scene.main) as client:
        loc = location((await client.get_messages(scene.channel.chat_id, msg_id)).document)
        scene.tg.flood_wait(7)
        with pytest.raises(FloodWait) as caught:
            await client.invoke(get_file(loc, 0, 4096))
        assert caught.value.value == 7
        assert len((await client.invoke(get_file(loc, 0, 4096))).bytes) == 4096
    assert scene.tg.faults == []  # a spent fault is forgotten


async def test_short_flood_wait_is_slept_through_by_pyrogram(scene: Scene) -> None:
    """Under the client's sleep_threshold, pyrogram's own Session.invoke waits and retries."""
    msg_id = scene.store(SyntheticContent(MIB, seed=1))
    async with started(scene.tg, scene.main, sleep_threshold=5) as client:
        loc = location((await client.get_messages(scene.channel.chat_id, msg_id)).document)
        scene.tg.flood_wait(1)
        result = await client.invoke(get_file(loc, 0, 4096))
    assert len(result.bytes) == 4096
    assert scene.tg.count("upload.GetFile") == 2


async def test_file_reference_expires_and_a_refetch_works(scene: Scene) -> None:
    """After expire_file_reference the old location fails; a fresh get_messages yields a working one."""
    msg_id = scene.store(SyntheticContent(MIB, seed=2))
    async with started(scene.tg, scene.main) as client:
        msg = await client.get_messages(scene.channel.chat_id, msg_id)
        old = location(msg.document)
        scene.tg.expire_file_reference(FileId.decode(msg.document.file_id).media_id)
        with pytest.raises(FileReferenceExpired):
            await client.invoke(get_file(old, 0, 4096))
        fresh = location((await client.get_messages(scene.channel.chat_id, msg_id)).document)
        result = await client.invoke(get_file(fresh, 0, 4096))
    assert fresh.file_reference != old.file_reference
    assert result.bytes == synthetic_bytes(2, 0, 4096)


async def test_file_on_another_dc_migrates_and_media_session_serves_it(scene: Scene) -> None:
    """A file stored on DC 4 answers FILE_MIGRATE_4 at home; get_session(4, is_media=True) serves it."""
    msg_id = scene.store(SyntheticContent(MIB, seed=4), dc_id=4)
    async with started(scene.tg, scene.main) as client:
        msg = await client.get_messages(scene.channel.chat_id, msg_id)
        assert msg.document.file_id  # the file id encodes the DC
        assert FileId.decode(msg.document.file_id).dc_id == 4
        loc = location(msg.document)
        with pytest.raises(FileMigrate) as caught:
            await client.invoke(get_file(loc, 0, 4096))
        assert caught.value.value == 4
        session = await client.get_session(4, is_media=True)
        result = await session.invoke(get_file(loc, 0, 4096))
    assert result.bytes == synthetic_bytes(4, 0, 4096)
    # kurigram authorizes the DC's session via export/import (it does so for both session kinds).
    exported = scene.tg.count("auth.ExportAuthorization")
    assert exported >= 1
    assert scene.tg.count("auth.ImportAuthorization") == exported
    served = scene.tg.getfile_calls()[-1]
    assert (served.dc_id, served.is_media) == (4, True)


@pytest.mark.parametrize("kind", ["oserror", "drop"])
async def test_network_faults_are_retried_by_pyrogram(scene: Scene, kind: str) -> None:
    """Two injected network failures cost two retries inside pyrogram; the third attempt succeeds."""
    msg_id = scene.store(SyntheticContent(MIB, seed=1))
    async with started(scene.tg, scene.main) as client:
        loc = location((await client.get_messages(scene.channel.chat_id, msg_id)).document)
        scene.tg.inject("upload.GetFile", kind=kind, times=2)  # type: ignore[arg-type]
        result = await client.invoke(get_file(loc, 0, 4096), retry_delay=0.01)
    assert len(result.bytes) == 4096
    assert scene.tg.count("upload.GetFile") == 3


async def test_persistent_network_fault_exhausts_retries(scene: Scene) -> None:
    """A bot whose network is down fails after pyrogram's retries, and works again once it is back."""
    msg_id = scene.store(SyntheticContent(MIB, seed=1))
    async with started(scene.tg, scene.main) as client:
        loc = location((await client.get_messages(scene.channel.chat_id, msg_id)).document)
        scene.tg.set_offline(scene.main)
        with pytest.raises(TimeoutError, match="after 3 retries"):
            await client.invoke(get_file(loc, 0, 4096), retries=3, retry_delay=0.01)
        assert scene.tg.count("upload.GetFile") == 3
        scene.tg.set_offline(scene.main, False)
        assert len((await client.invoke(get_file(loc, 0, 4096))).bytes) == 4096


async def test_skip_lets_requests_through_before_the_fault(scene: Scene) -> None:
    """With skip=2 the first two GetFiles succeed and the third hits the fault (a mid-stream fault)."""
    msg_id = scene.store(SyntheticContent(MIB, seed=1))
    async with started(scene.tg, scene.main) as client:
        loc = location((await client.get_messages(scene.channel.chat_id, msg_id)).document)
        scene.tg.flood_wait(30, skip=2)
        await client.invoke(get_file(loc, 0, 4096))
        await client.invoke(get_file(loc, 4096, 4096))
        with pytest.raises(FloodWait):
            await client.invoke(get_file(loc, 8192, 4096))
        await client.invoke(get_file(loc, 8192, 4096))


async def test_faults_can_target_one_bot(scene: Scene) -> None:
    """A fault injected for the worker bot leaves the main bot's requests alone."""
    msg_id = scene.store(SyntheticContent(MIB, seed=1))
    async with (
        started(scene.tg, scene.main) as main,
        started(scene.tg, scene.worker) as worker,
    ):
        main_loc = location((await main.get_messages(scene.channel.chat_id, msg_id)).document)
        worker_loc = location((await worker.get_messages(scene.channel.chat_id, msg_id)).document)
        scene.tg.flood_wait(30, bot=scene.worker)
        await main.invoke(get_file(main_loc, 0, 4096))
        with pytest.raises(FloodWait):
            await worker.invoke(get_file(worker_loc, 0, 4096))


async def test_faults_can_target_any_method(scene: Scene) -> None:
    """Faults are keyed by method name: a FloodWait on users.GetFullUser hits only that method."""
    msg_id = scene.store(SyntheticContent(MIB, seed=1))
    async with started(scene.tg, scene.main) as client:
        loc = location((await client.get_messages(scene.channel.chat_id, msg_id)).document)
        scene.tg.flood_wait(42, method="users.GetFullUser")
        await client.invoke(get_file(loc, 0, 4096))
        with pytest.raises(FloodWait) as caught:
            await client.invoke(raw.functions.users.GetFullUser(id=raw.types.InputUserSelf()))
    assert caught.value.value == 42


async def test_faults_can_target_one_dc_and_last_until_cleared(scene: Scene) -> None:
    """dc=4 leaves home-DC requests alone; times=None keeps failing until the faults are cleared."""
    home = scene.store(SyntheticContent(MIB, seed=1))
    away = scene.store(SyntheticContent(MIB, seed=4), dc_id=4)
    async with started(scene.tg, scene.main) as client:
        home_loc = location((await client.get_messages(scene.channel.chat_id, home)).document)
        away_loc = location((await client.get_messages(scene.channel.chat_id, away)).document)
        session = await client.get_session(4, is_media=True)
        scene.tg.flood_wait(30, dc=4, times=None)
        for offset in (0, 4096, 8192):
            await client.invoke(get_file(home_loc, offset, 4096))
            with pytest.raises(FloodWait):
                await session.invoke(get_file(away_loc, offset, 4096))
        scene.tg.faults.clear()
        assert len((await session.invoke(get_file(away_loc, 0, 4096))).bytes) == 4096
    assert scene.tg.bot_counts[("upload.GetFile", scene.main.bot_id)] == 7


async def test_faults_with_a_probability_hit_some_requests(scene: Scene) -> None:
    """probability=0.5 over 40 requests fails some and passes some (the world's RNG is seeded)."""
    msg_id = scene.store(SyntheticContent(MIB, seed=1))
    async with started(scene.tg, scene.main) as client:
        loc = location((await client.get_messages(scene.channel.chat_id, msg_id)).document)
        scene.tg.flood_wait(30, times=None, probability=0.5)
        failed = 0
        for k in range(40):
            try:
                await client.invoke(get_file(loc, 4096 * k, 4096))
            except FloodWait:
                failed += 1
    assert 5 <= failed <= 35


async def test_kurigram_get_messages_sleeps_through_any_flood_wait(scene: Scene) -> None:
    """Pinned kurigram behaviour: get_messages sleeps through even a 1 h FloodWait, so callers need a timeout."""
    msg_id = scene.store(SyntheticContent(MIB, seed=1))
    async with started(scene.tg, scene.main, sleep_threshold=0) as client:
        await client.get_messages(scene.channel.chat_id, msg_id)  # resolves the channel first
        scene.tg.flood_wait(3600, method="channels.GetMessages")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await client.get_messages(scene.channel.chat_id, msg_id)
    assert scene.tg.count("channels.GetMessages") == 2


# ---------------------------------------------------------------------------- per-bot access


async def test_file_references_are_per_bot(scene: Scene) -> None:
    """A worker cannot use the main bot's file id; it must resolve the message itself."""
    msg_id = scene.store(SyntheticContent(MIB, seed=6))
    async with (
        started(scene.tg, scene.main) as main,
        started(scene.tg, scene.worker) as worker,
    ):
        main_loc = location((await main.get_messages(scene.channel.chat_id, msg_id)).document)
        with pytest.raises(FileReferenceExpired):
            await worker.invoke(get_file(main_loc, 0, 4096))
        own = location((await worker.get_messages(scene.channel.chat_id, msg_id)).document)
        result = await worker.invoke(get_file(own, 0, 4096))
    assert result.bytes == synthetic_bytes(6, 0, 4096)


async def test_bot_outside_the_channel_gets_channel_private(scene: Scene) -> None:
    """A bot that is not a member of the storage channel cannot read it: CHANNEL_PRIVATE."""
    msg_id = scene.store(SyntheticContent(10, seed=1))
    async with started(scene.tg, scene.outsider) as client:
        with pytest.raises(ChannelPrivate):
            await client.get_messages(scene.channel.chat_id, msg_id)
        scene.tg.grant(scene.channel, scene.outsider)
        msg = await client.get_messages(scene.channel.chat_id, msg_id)
    assert msg.document.file_size == 10


# ---------------------------------------------------------------------------- updates and replies


@contextlib.asynccontextmanager
async def listening(scene: Scene) -> AsyncIterator[tuple[Client, asyncio.Queue[types.Message]]]:
    """The main bot with updates on and a handler that queues every private message it receives."""
    inbox: asyncio.Queue[types.Message] = asyncio.Queue()

    async def on_message(client: Client, message: types.Message) -> None:
        await inbox.put(message)

    handler = MessageHandler(on_message, filters.private)
    async with started(scene.tg, scene.main, no_updates=False, handlers=[handler]) as client:
        yield client, inbox


async def test_user_text_arrives_as_a_real_update(scene: Scene) -> None:
    """A user's text message reaches the bot's handler as a parsed pyrogram Message."""
    async with listening(scene) as (_, inbox):
        await scene.tg.send_user_message(scene.user, scene.main, text="/start hello")
        message = await asyncio.wait_for(inbox.get(), 5)
    assert message.text == "/start hello"
    assert message.from_user.id == scene.user.user_id
    assert message.chat.id == scene.user.user_id
    assert [(e.type, e.offset, e.length) for e in message.entities] == [
        (enums.MessageEntityType.BOT_COMMAND, 0, len("/start"))
    ]


EXPECTED_TYPE = {
    "document": types.Document,
    "video": types.Video,
    "audio": types.Audio,
    "photo": types.Photo,
    "animation": types.Animation,
    "voice": types.Voice,
    "video_note": types.VideoNote,
}


@pytest.mark.parametrize("kind", MEDIA_KINDS)
async def test_user_media_parses_as_the_right_pyrogram_type(scene: Scene, kind: str) -> None:
    """Each media kind a user can send is parsed by pyrogram into its own type with the right size."""
    f = scene.tg.add_file(
        SyntheticContent(2 * MIB + 3, seed=8),
        name=f"x.{kind}",
        mime_type="image/jpeg" if kind == "photo" else "application/octet-stream",
        kind=kind,  # type: ignore[arg-type]
    )
    async with listening(scene) as (_, inbox):
        await scene.tg.send_user_message(scene.user, scene.main, file=f)
        message = await asyncio.wait_for(inbox.get(), 5)
    media = getattr(message, kind)
    assert isinstance(media, EXPECTED_TYPE[kind])
    assert media.file_size == 2 * MIB + 3
    assert FileId.decode(media.file_id).media_id == f.media_id
    others = set(EXPECTED_TYPE) - {kind}
    assert all(getattr(message, other) is None for other in others)


async def test_bot_replies_are_recorded_with_buttons(scene: Scene) -> None:
    """A handler's reply with url and callback buttons is recorded and seen by wait_replies."""
    url = "https://files.example.com/dl/abc/x.bin"

    async def reply(client: Client, message: types.Message) -> None:
        await message.reply_text(
            "your link",
            reply_markup=types.InlineKeyboardMarkup(
                [
                    [types.InlineKeyboardButton("Download", url=url)],
                    [types.InlineKeyboardButton("Delete", callback_data="del:1")],
                ]
            ),
        )

    handler = MessageHandler(reply, filters.private)
    async with started(scene.tg, scene.main, no_updates=False, handlers=[handler]):
        await scene.tg.send_user_message(scene.user, scene.main, text="hi")
        replies = await scene.tg.wait_replies(scene.user, 1, timeout=5)
    assert len(replies) == 1
    sent = replies[0]
    assert sent.text == "your link"
    assert sent.bot_id == scene.main.bot_id
    assert sent.buttons == (("Download", url), ("Delete", "del:1"))


async def test_wait_replies_times_out_when_the_bot_is_silent(scene: Scene) -> None:
    """wait_replies raises TimeoutError rather than hanging when no reply comes."""
    async with started(scene.tg, scene.main, no_updates=False):
        await scene.tg.send_user_message(scene.user, scene.main, text="anyone?")
        with pytest.raises(TimeoutError):
            await scene.tg.wait_replies(scene.user, 1, timeout=0.05)


# ---------------------------------------------------------------------------- request counters


async def test_requests_are_counted_per_method_and_client(scene: Scene) -> None:
    """counts and count() tell methods and client names apart; calls records offsets and limits."""
    msg_id = scene.store(SyntheticContent(MIB, seed=1))
    async with (
        started(scene.tg, scene.main, name="main") as main,
        started(scene.tg, scene.worker, name="worker-1") as worker,
    ):
        main_loc = location((await main.get_messages(scene.channel.chat_id, msg_id)).document)
        worker_loc = location((await worker.get_messages(scene.channel.chat_id, msg_id)).document)
        for i in range(3):
            await main.invoke(get_file(main_loc, i * 4096, 4096))
        await worker.invoke(get_file(worker_loc, 0, 8192))
    assert scene.tg.counts[("upload.GetFile", "main")] == 3
    assert scene.tg.counts[("upload.GetFile", "worker-1")] == 1
    assert scene.tg.count("upload.GetFile") == 4
    assert scene.tg.count("upload.GetFile", "worker-1") == 1
    assert scene.tg.count("channels.GetMessages", "main") == 1
    assert scene.tg.count("auth.ImportBotAuthorization") == 2
    assert [(c.client, c.offset, c.limit) for c in scene.tg.getfile_calls()] == [
        ("main", 0, 4096),
        ("main", 4096, 4096),
        ("main", 8192, 4096),
        ("worker-1", 0, 8192),
    ]
    assert {c.bot_id for c in scene.tg.getfile_calls()} == {
        scene.main.bot_id,
        scene.worker.bot_id,
    }


# ---------------------------------------------------------------------------- sessions


async def test_session_file_is_reused_without_logging_in_again(
    scene: Scene, tmp_path: Path
) -> None:
    """A persistent session logs in once; starting the same session name again does not log in."""
    async with started(scene.tg, scene.main, name="main", workdir=tmp_path) as client:
        assert client.me.id == scene.main.bot_id
    assert (tmp_path / "main.session").exists()
    assert scene.tg.count("auth.ImportBotAuthorization") == 1
    async with started(scene.tg, scene.main, name="main", workdir=tmp_path) as again:
        assert again.me.id == scene.main.bot_id
    assert scene.tg.count("auth.ImportBotAuthorization") == 1


async def test_unknown_bot_token_is_rejected(scene: Scene) -> None:
    """A token no simulated bot owns fails login with pyrogram's AccessTokenInvalid (400)."""
    ghost = SimBot(bot_id=999_999, username="ghost", token="999999:" + "x" * 35)
    with pytest.raises(AccessTokenInvalid):
        async with started(scene.tg, ghost):
            pass
