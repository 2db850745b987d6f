"""A wire simulator as tests see it, whichever process it runs in.

Tests over the wire talk to a :class:`WireSim`: addresses and RSA key to point pyrogram at, the
scenario (bot tokens, channel, files) and the few controls a test needs (faults, limits, salt
rotation, counters, user messages and the bot's replies). :class:`InLoopSim` runs the server in the
test's own event loop: fine for behaviour, and the fast default. :class:`ProcessSim` runs it as
``python -m streambot simulator`` and drives it through the control API: what timing claims need.
A test asks for what only one of them offers with :func:`needs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyrogram
import pytest
from pyrogram.enums import ParseMode

from streambot.simulator import SimulatedTelegram, SyntheticContent
from streambot.simulator.samples import SyntheticFile
from streambot.simulator.wire.client import pointed_at
from streambot.simulator.wire.faults import WireFault
from streambot.simulator.wire.info import SimulatorInfo
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
    #: beyond the common surface: "rotate_salt", "far_bot" (home DC 4), "dc4_file", "world"
    capabilities: frozenset[str]

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
    def add_rpc_fault(self, kind: str, *, count: int = 1, after: int = 0, **kw: Any) -> None:
        """A world fault by its control API name (bad_msg, cdn_redirect, rpc_error, ...)."""
        ...

    def set_limits(self, **kw: float) -> None: ...
    def rotate_salt(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...
    def count(self, method: str) -> int: ...
    async def send_text(self, user_id: int, text: str) -> None: ...
    async def wait_replies(self, user_id: int, count: int, timeout: float) -> list[str]: ...


def needs(sim: WireSim, capability: str) -> None:
    if capability not in sim.capabilities:
        pytest.skip(f"this simulator ({type(sim).__name__}) has no {capability}")


class InLoopSim:
    """World + :class:`WireTelegram` in this event loop, with the standard test scenario."""

    capabilities = frozenset({"rotate_salt", "far_bot", "dc4_file", "world"})

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
        self.server.add_wire_fault(WireFault.make(kind, **kw))

    def add_rpc_fault(self, kind: str, *, count: int = 1, after: int = 0, **kw: Any) -> None:
        method = kw.pop("method", "upload.GetFile")
        if kind in ("bad_msg", "cdn_redirect"):
            self.world.inject(method, kind=kind, times=count, skip=after, **kw)
        elif kind == "rpc_error":
            self.world.inject(method, times=count, skip=after, **kw)
        else:
            raise ValueError(f"no in-loop shortcut for a {kind} fault")

    def set_limits(self, **kw: float) -> None:
        self.server.set_limits(**kw)

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


#: The files of the standard scenario that a simulator process can post (all on its home DC).
PROCESS_FILES = ((3 * MIB + 12_345, "home.bin"), (2 * MIB, "exact.bin"))
PROCESS_START_DEADLINE = 60.0


class ProcessSim:
    """``python -m streambot simulator`` in its own process, driven through its control API.

    The control API calls are blocking HTTP on loopback to another process: fine in a test.
    """

    capabilities: frozenset[str] = frozenset()

    def __init__(self, workdir: Path) -> None:
        info_path = workdir / "sim-info.json"
        args = [sys.executable, "-m", "streambot", "simulator", "--workers", "0"]
        for size, name in PROCESS_FILES:
            args += ["--synthetic", f"{size}:{name}"]
        args += ["--info-out", str(info_path)]
        self._log = (workdir / "sim.log").open("wb")
        self._proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + PROCESS_START_DEADLINE
        while not info_path.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"simulator did not start: {(workdir / 'sim.log').read_text()}")
            time.sleep(0.05)
        self.info = SimulatorInfo.load(info_path)
        self.bot_token = self.info.bot_token
        self.bot_id = int(self.bot_token.split(":")[0])
        self.far_bot_token, self.far_bot_id = "", 0
        self.chat_id = self.info.bin_channel
        self.user_id = 424_242
        self.files = {
            f.name: SimFileInfo(
                f.name, f.size, f.message_id, f.dc, SyntheticFile(f.size, f.name).seed
            )
            for f in self.info.files
        }

    @property
    def dcs(self) -> dict[int, Address]:
        return self.info.dcs

    @property
    def media_dcs(self) -> dict[int, Address]:
        return self.info.media_dcs

    @property
    def rsa_public_pem(self) -> str:
        return self.info.rsa_public_key

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.info.control_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=70) as response:
            return json.loads(response.read())

    def add_wire_fault(self, kind: str, **kw: Any) -> None:
        # The control API has no media filter: with no other answer pending, the next
        # answer on any of the bot's connections is the one the test is waiting for.
        kw.pop("media", None)
        self._call("POST", "/faults", {"kind": kind, **kw})

    def add_rpc_fault(self, kind: str, *, count: int = 1, after: int = 0, **kw: Any) -> None:
        self._call("POST", "/faults", {"kind": kind, "count": count, "after": after, **kw})

    def set_limits(self, **kw: float) -> None:
        self._call("POST", "/limits", kw)

    def rotate_salt(self) -> None:
        raise NotImplementedError("no control API for salts")

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self._call("GET", "/stats")
        return stats

    def count(self, method: str) -> int:
        return int(self.stats()["requests"]["by_method"].get(method, 0))

    async def send_text(self, user_id: int, text: str) -> None:
        body = {"user_id": user_id, "text": text}
        await asyncio.to_thread(self._call, "POST", "/messages", body)

    async def wait_replies(self, user_id: int, count: int, timeout: float) -> list[str]:
        # In a thread: the bot answering in this event loop must keep running meanwhile.
        query = urllib.parse.urlencode({"user_id": user_id, "count": count, "wait": timeout})
        answer = await asyncio.to_thread(self._call, "GET", f"/replies?{query}")
        return [r["text"] for r in answer["replies"]]

    def stop(self) -> None:
        if self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()


@contextlib.contextmanager
def process_sim(workdir: Path) -> Iterator[ProcessSim]:
    sim = ProcessSim(workdir)
    try:
        yield sim
    finally:
        sim.stop()


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
