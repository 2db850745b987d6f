"""A wire simulator as tests see it, whichever process it runs in.

Tests over the wire talk to a :class:`WireSim`: addresses and RSA key to point pyrogram at, the
scenario (bot tokens, channel, files) and the few controls a test needs (faults, salt rotation,
counters, user messages and the bot's replies). :class:`InLoopSim` runs the server in the test's own
event loop: fine for behaviour, wrong for anything about timing or CPU, which needs the server in
another process (the standalone simulator process implements the same surface over its control API).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyrogram
from pyrogram.enums import ParseMode

from streambot.simulator import SimulatedTelegram, SyntheticContent
from streambot.simulator.wire.client import pointed_at
from streambot.simulator.wire.server import WireTelegram

MIB = 1 << 20
Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class SimFileInfo:
    name: str
    size: int
    message_id: int
    dc: int
    seed: int


class WireSim(Protocol):
    @property
    def dcs(self) -> dict[int, Address]: ...
    @property
    def media_dcs(self) -> dict[int, Address]: ...
    @property
    def rsa_public_pem(self) -> str: ...

    bot_token: str
    bot_id: int
    far_bot_token: str  # a bot whose home DC is 4
    far_bot_id: int
    chat_id: int
    user_id: int
    files: dict[str, SimFileInfo]

    def add_wire_fault(self, kind: str, **kw: Any) -> None: ...
    def rotate_salt(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def count(self, method: str) -> int: ...
    async def send_text(self, user_id: int, text: str) -> None: ...
    async def wait_replies(self, user_id: int, count: int, timeout: float) -> list[str]: ...


class InLoopSim:
    """World + :class:`WireTelegram` in this event loop, with the standard test scenario."""

    def __init__(self) -> None:
        self.world = SimulatedTelegram()
        bot = self.world.add_bot("wire_bot")
        far = self.world.add_bot("far_bot", dc_id=4)
        channel = self.world.add_channel("bin", members=[bot, far])
        self.user = self.world.add_user("Alice")
        self.bot_token, self.bot_id = bot.token, bot.bot_id
        self.far_bot_token, self.far_bot_id = far.token, far.bot_id
        self.chat_id = channel.chat_id
        self.user_id = self.user.user_id
        self.files: dict[str, SimFileInfo] = {}
        for name, size, dc, seed in (
            ("home.bin", 3 * MIB + 12_345, 2, 11),
            ("exact.bin", 2 * MIB, 2, 12),
            ("far.bin", MIB + 4_097, 4, 13),
        ):
            f = self.world.add_file(SyntheticContent(size, seed), name=name, dc_id=dc)
            self.files[name] = SimFileInfo(name, size, self.world.post_file(channel, f), dc, seed)
        self.server = WireTelegram(self.world)

    @property
    def dcs(self) -> dict[int, Address]:
        return self.server.dcs

    @property
    def media_dcs(self) -> dict[int, Address]:
        return self.server.media_dcs

    @property
    def rsa_public_pem(self) -> str:
        return self.server.rsa_public_pem

    def add_wire_fault(self, kind: str, **kw: Any) -> None:
        self.server.add_wire_fault(kind, **kw)

    def rotate_salt(self) -> None:
        self.server.rotate_salt()

    def stats(self) -> dict[str, Any]:
        return self.server.stats()

    def count(self, method: str) -> int:
        return self.world.count(method)

    async def send_text(self, user_id: int, text: str) -> None:
        bot = self.world.bots[self.bot_id]
        await self.world.send_user_message(self.world.users[user_id], bot, text=text)

    async def wait_replies(self, user_id: int, count: int, timeout: float) -> list[str]:
        replies = await self.world.wait_replies(self.world.users[user_id], count, timeout)
        return [r.text for r in replies]


@contextlib.asynccontextmanager
async def in_loop_sim() -> AsyncIterator[InLoopSim]:
    sim = InLoopSim()
    await sim.server.start()
    try:
        yield sim
    finally:
        await sim.server.close()


@contextlib.contextmanager
def pointed(sim: WireSim) -> Iterator[None]:
    with pointed_at(sim.dcs, sim.rsa_public_pem, media_dcs=sim.media_dcs):
        yield


async def stop_client(client: pyrogram.Client) -> None:
    """``Client.stop`` plus the foreign-DC sessions it leaves running (kurigram's
    ``terminate`` stops ``media_sessions`` only; ``client.sessions`` keep their connections)."""
    await client.stop()
    for session in list(client.sessions.values()):
        await session.stop()
    client.sessions.clear()


def make_client(
    sim: WireSim, workdir: Path, *, name: str = "bot", token: str | None = None, **kw: Any
) -> pyrogram.Client:
    """A pyrogram client with a session file on disk, as production runs it."""
    kw.setdefault("no_updates", True)
    return pyrogram.Client(
        name,
        api_id=1,
        api_hash="0" * 32,
        bot_token=token or sim.bot_token,
        workdir=str(workdir),
        parse_mode=ParseMode.DISABLED,
        sleep_threshold=5,
        **kw,
    )
