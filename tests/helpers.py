"""What several test modules share: the running-app handle, expected bytes, waits, fakes, CLI runs.

Test modules import from here (and from ``clock``), never from each other, so a test module is only
ever collected once and can be read on its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient

# One free-port rule for tests and benchmarks (why it avoids the ephemeral range: its docstring).
from bench.procs import free_port as free_port
from streambot import links
from streambot.app import SERVICES, Services
from streambot.config import Settings
from streambot.simulator import getfile_rule_violation
from streambot.simulator.content import synthetic_bytes
from streambot.simulator.wire.info import SimulatorInfo
from streambot.simulator.wire.process import READY_LINE
from streambot.simulator.world import World
from streambot.units import MIB

LINK_SECRET = b"test-link-secret-0123456789abcdef"


@dataclasses.dataclass
class Running:
    """The real application, started on the simulator, with an HTTP client pointed at it."""

    app: web.Application
    client: TestClient
    world: World
    settings: Settings

    @property
    def services(self) -> Services:
        return self.app[SERVICES]

    def dl_path(self, message_id: int, name: str = "file", expires_at: int | None = None) -> str:
        token = links.sign(links.LinkClaims(message_id, expires_at), LINK_SECRET)
        return links.link_paths(token, name)[0]


StartApp = Callable[..., Awaitable[Running]]


@dataclass
class Served:
    app: web.Application
    runner: web.AppRunner
    port: int

    @property
    def services(self) -> Services:
        return self.app[SERVICES]

    def url(self, message_id: int, name: str = "file.bin") -> str:
        token = links.sign(links.LinkClaims(message_id, None), LINK_SECRET)
        return f"http://127.0.0.1:{self.port}{links.link_paths(token, name)[0]}"

    def path(self, message_id: int, name: str = "file.bin") -> str:
        return self.url(message_id, name).split(str(self.port), 1)[1]

    async def connect(self, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port, local_addr=(source, 0))


#: Start the application behind the production runner and site (``make_runner``/``make_site``)
#: on a real port; unlike aiohttp's TestServer it does not cancel handlers on disconnect.
Serve = Callable[..., Awaitable[Served]]


SMALL_BLOCKS = {"stream_block_size_kib": 4}


def expected(seed: int, start: int, end: int) -> bytes:
    """The file's bytes [start, end] inclusive."""
    return synthetic_bytes(seed, start, end - start + 1)


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds, failing after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        # The conditions span several objects (registry, budget, fleet) with no shared event.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


def rule_breaking_calls(world: World) -> list[Any]:
    return [
        c
        for c in world.telegram.getfile_calls()
        if getfile_rule_violation(c.offset or 0, c.limit or 0, c.precise)
    ]


ABORTED = (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)


def quiescent(app: Running | Served) -> bool:
    """Nothing streams and nothing is held: registry, budget and every client are idle."""
    services = app.services
    return (
        len(services.registry) == 0
        and services.budget.used == 0
        and services.budget.active_streams == 0
        and all(fc.active_streams == 0 for fc in services.fleet.clients)
    )


@dataclass
class FakeProcess:
    """Stands in for psutil.Process: RSS is whatever the test sets (or the next queued value)."""

    rss: int
    vms: int = 900 * MIB
    percent: float = 2.5
    threads: int = 9
    queued: list[int] = field(default_factory=list)

    def memory_info(self) -> Any:
        if self.queued:
            self.rss = self.queued.pop(0)
        return SimpleNamespace(rss=self.rss, vms=self.vms)

    def memory_percent(self) -> float:
        return self.percent

    def num_threads(self) -> int:
        return self.threads


ROOT = Path(__file__).resolve().parent.parent

API_HASH = "0123456789abcdef0123456789abcdef"

BOT_TOKEN = "123456789:AAsecretsecretsecretsecretsecretsec"

GOOD = {
    "API_ID": "123456",
    "API_HASH": API_HASH,
    "BOT_TOKEN": BOT_TOKEN,
    "BIN_CHANNEL": "-1001234567890",
    "BASE_URL": "https://files.example.com",
    "ADMINS": "11111111",
}


def cli_env(**extra: str) -> dict[str, str]:
    """The current environment without any StreamBot setting (CI may have some), plus ``extra``."""
    names = {f.name.upper() for f in dataclasses.fields(Settings)}
    env = {
        k: v for k, v in os.environ.items() if k not in names and not k.startswith("MULTI_TOKEN")
    }
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def streambot(
    *args: str, cwd: Path, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streambot", *args],
        cwd=cwd,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


STARTUP_DEADLINE = 60.0  # seconds; start-up is ~2-3 s here, the margin is for loaded CI machines


async def wait_for_file(path: Path, deadline: float) -> None:
    """Poll for ``path`` (written atomically by the demo when it is ready) until ``deadline``."""
    async with asyncio.timeout(deadline):
        # Another process creates the file: there is no event to await, so poll it.
        while not await asyncio.to_thread(path.exists):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def fetch(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.read()


async def spawn_streambot(cwd: Path, stderr: Path, *args: str) -> asyncio.subprocess.Process:
    """``python -m streambot ARGS`` in ``cwd``: stdin and stdout piped, stderr into ``stderr``."""
    with stderr.open("wb") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "streambot",
            *args,
            cwd=cwd,
            env=cli_env(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )


class Proc:
    """A ``python -m streambot`` child: stdout read line by line, stderr kept in a file.

    Waits are on its output, never on the clock alone.
    """

    def __init__(self, proc: asyncio.subprocess.Process, stderr: Path) -> None:
        self.proc = proc
        self.stderr = stderr
        self.lines: list[str] = []

    async def read_until(self, predicate: str, deadline: float = STARTUP_DEADLINE) -> str:
        """Read stdout lines until one contains ``predicate``; returns that line."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(deadline):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(
                        f"ended before {predicate!r}: {self.lines}\n{self.stderr.read_text()}"
                    )
                line = raw.decode().rstrip("\n")
                self.lines.append(line)
                if predicate in line:
                    return line

    async def wait_stderr(self, text: str, deadline: float = STARTUP_DEADLINE) -> None:
        """Wait until ``text`` shows in the stderr file (the process logs there, not to a pipe)."""
        async with asyncio.timeout(deadline):
            # Another process writes the file: nothing to await but its contents.
            while text not in await asyncio.to_thread(self.stderr.read_text):
                if self.proc.returncode is not None:
                    raise AssertionError(self.stderr.read_text())
                await asyncio.sleep(0.1)

    async def stop(
        self, sig: signal.Signals = signal.SIGTERM, deadline: float = 20.0
    ) -> tuple[int, str]:
        """Send ``sig``; return the exit status and the rest of stdout."""
        self.proc.send_signal(sig)
        assert self.proc.stdout is not None
        async with asyncio.timeout(deadline):
            rest = await self.proc.stdout.read()
            code = await self.proc.wait()
        return code, rest.decode()


#: Start ``python -m streambot ARGS`` in the test's tmp_path (the ``start_streambot`` fixture).
Start = Callable[..., Awaitable[Proc]]


async def start_simulator(start: Start, tmp_path: Path, *args: str) -> tuple[Proc, SimulatorInfo]:
    """The simulator process, once ready, and the info file it wrote."""
    info_path = tmp_path / "sim" / "info.json"
    info_path.parent.mkdir(exist_ok=True)
    sim = await start("simulator", "--info-out", str(info_path), *args)
    await sim.read_until(READY_LINE)
    return sim, SimulatorInfo.load(info_path)


async def call(method: str, url: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
    """One control-API request: status and JSON answer."""
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, json=body, **kw) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def reply_from_bot(info: SimulatorInfo, user: int, body: dict[str, Any]) -> dict[str, Any]:
    """The user writes to the main bot through the control API; returns the bot's next reply.

    Waits with the control API's long poll (no sleeping): the replies already there are counted
    first, so the one returned is the answer to this message.
    """
    status, got = await call(
        "GET", info.control_url + "/replies", params={"user_id": user, "count": 0, "wait": 0}
    )
    seen = len(got["replies"]) if status == 200 else 0
    status, sent = await call("POST", info.control_url + "/messages", {"user_id": user, **body})
    assert status == 201, sent
    status, got = await call(
        "GET",
        info.control_url + "/replies",
        params={"user_id": user, "count": seen + 1, "wait": 30},
    )
    assert status == 200
    assert len(got["replies"]) > seen, "the bot did not answer"
    reply: dict[str, Any] = got["replies"][-1]
    return reply


class Demo(Proc):
    """A running demo subprocess: a :class:`Proc` that also takes chat lines on stdin."""

    async def read_until(self, predicate: str, deadline: float = 20.0) -> list[str]:  # type: ignore[override]
        """Read stdout lines until one contains ``predicate``; returns the lines read so far."""
        await super().read_until(predicate, deadline)
        return self.lines

    async def say(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()

    async def stop(
        self, sig: signal.Signals = signal.SIGTERM, deadline: float = 15.0
    ) -> tuple[int, str]:
        return await super().stop(sig, deadline)
