"""``python -m streambot demo``: the whole application on the offline Telegram simulator.

The simulator plays Telegram: a main bot, worker bots, the storage channel and a demo admin user.
Each PATH is posted into the storage channel and served lazily from disk; standard input is the
admin's private chat with the bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp

from streambot.app import SERVICES, create_app, make_runner, make_site
from streambot.atomicfile import atomic_write
from streambot.bot.handlers import BotContext
from streambot.config import Settings, ensure_link_secret
from streambot.simulator import DiskContent, SimulatedTelegram
from streambot.simulator.samples import (
    SAMPLE_FILES,
    SyntheticFile,
    disk_file,
    parse_size,
    seed_files,
)
from streambot.simulator.world import World, build_world, simulated_settings, world_settings

if TYPE_CHECKING:  # the wire half (MTProto server, cryptography) loads only in wire mode
    from streambot.simulator.wire.info import SimulatorInfo

log = logging.getLogger(__name__)

# Re-exported: the CLI, the tests and the benchmarks know them as the demo's.
REPLY_WAIT_SECONDS = 15
SIMULATOR_START_SECONDS = 60  # a loaded CI machine needs a few seconds for the imports alone

__all__ = ["SAMPLE_FILES", "SyntheticFile", "parse_size", "post_files", "run_demo"]


def post_files(
    world: World,
    ctx: BotContext,
    paths: Sequence[Path],
    synthetic: Sequence[SyntheticFile] = (),
) -> list[dict[str, Any]]:
    """Post PATHs, then synthetic files; the sample set only when neither was given."""
    entries = []
    for path, f in seed_files(world.telegram, paths, synthetic):
        message_id = world.telegram.post_file(world.channel, f)
        entries.append(link_entry(ctx, path, f.name, f.size, message_id))
    return entries


def link_entry(
    ctx: BotContext, path: Path | str | None, name: str, size: int, message_id: int
) -> dict[str, Any]:
    """One entry of the links JSON (the same shape in both Telegram modes)."""
    found = ctx.make_links(message_id, name)
    return {
        "path": str(Path(path).resolve()) if path else None,
        "name": name,
        "size": size,
        "download_url": found.download,
        "watch_url": found.watch,
    }


class Chat(Protocol):
    async def say(self, text: str) -> list[str]:
        """Send one line as the admin; return the bot's replies."""
        ...


class WorldChat:
    """The admin's chat with an in-process simulated world."""

    def __init__(self, world: World) -> None:
        self.world = world

    async def say(self, text: str) -> list[str]:
        tg, admin, bot = self.world.telegram, self.world.admin, self.world.main_bot
        before = len(tg.replies(admin))
        text = text.strip()
        if text.startswith("/send "):
            path = Path(text[6:].strip())
            try:
                content = await asyncio.to_thread(DiskContent.of, path)
            except OSError as exc:
                return [f"(demo) cannot read {path}: {exc.strerror}"]
            await tg.send_user_message(admin, bot, file=disk_file(tg, content))
        else:
            await tg.send_user_message(admin, bot, text=text)
        try:
            replies = await tg.wait_replies(admin, before + 1, timeout=REPLY_WAIT_SECONDS)
        except TimeoutError:
            return [f"(demo) the bot did not answer within {REPLY_WAIT_SECONDS} s"]
        return [r.text for r in replies[before:]]


class ControlChat:
    """The admin's chat with a wire simulator, through its control API (POST /messages, GET /replies)."""

    def __init__(self, control_url: str, admin_id: int) -> None:
        self.url = control_url
        self.admin_id = admin_id

    async def say(self, text: str) -> list[str]:
        text = text.strip()
        body: dict[str, Any] = {"user_id": self.admin_id, "text": text}
        if text.startswith("/send "):
            # Absolute: the simulator's working directory may differ from ours.
            path = await asyncio.to_thread(Path(text[6:].strip()).resolve)
            if not await asyncio.to_thread(path.is_file):
                return [f"(demo) cannot read {path}"]
            body = {"user_id": self.admin_id, "file": {"path": str(path)}}
        timeout = aiohttp.ClientTimeout(total=REPLY_WAIT_SECONDS + 10)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            before = len(await self._replies(http, count=0))
            async with http.post(self.url + "/messages", json=body) as resp:
                if resp.status != 201:
                    reason = (await resp.json(content_type=None) or {}).get("error", resp.reason)
                    return [f"(demo) could not deliver the message: {reason}"]
            replies = await self._replies(http, count=before + 1)
        if len(replies) <= before:
            return [f"(demo) the bot did not answer within {REPLY_WAIT_SECONDS} s"]
        return [str(r["text"]) for r in replies[before:]]

    async def _replies(self, http: aiohttp.ClientSession, *, count: int) -> list[dict[str, Any]]:
        query = {"user_id": str(self.admin_id), "count": str(count)}
        if count:
            query["wait"] = str(REPLY_WAIT_SECONDS)
        async with http.get(self.url + "/replies", params=query) as resp:
            resp.raise_for_status()
            replies: list[dict[str, Any]] = (await resp.json())["replies"]
            return replies


class AdminChat:
    """Standard input as the demo admin's private chat with the bot; replies go to stdout."""

    def __init__(self, chat: Chat) -> None:
        self.chat = chat
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=100)

    def start_reader(self, loop: asyncio.AbstractEventLoop) -> None:
        # A thread, because a blocking stdin read cannot go on the loop; daemon, so a read that
        # never returns does not keep the process alive after the demo stops.
        def read() -> None:
            try:
                for line in sys.stdin:
                    put = self.queue.put(line.rstrip("\n"))
                    asyncio.run_coroutine_threadsafe(put, loop).result()
            except RuntimeError:  # the loop closed: the demo is stopping
                return
            # End of input does not stop the demo (it may run in the background).

        threading.Thread(target=read, name="demo-stdin", daemon=True).start()

    async def run(self) -> None:
        while True:
            line = await self.queue.get()
            if not line or not line.strip():
                continue
            try:
                replies = await self.chat.say(line)
            except (LookupError, OSError, aiohttp.ClientError) as exc:
                # e.g. the bot is restarting; keep chatting
                replies = [f"(demo) could not deliver the message: {exc}"]
            for reply in replies:
                print(reply, flush=True)
                print("-" * 40, flush=True)


class SimulatorFailed(OSError):
    """The wire simulator child process did not come up."""


@contextlib.asynccontextmanager
async def simulator_process(
    *,
    workdir: Path,
    rtt_ms: float,
    workers: int,
    paths: Sequence[Path],
    synthetic: Sequence[SyntheticFile],
    info_out: Path | None,
) -> AsyncIterator[SimulatorInfo]:
    """``python -m streambot simulator`` as a child process, for as long as the block runs.

    Readiness is its "ready" line on stdout (after the info file is complete), not a poll; the
    rest of its output goes to our stderr. On exit it gets SIGTERM, then SIGKILL after 10 s.
    """
    from streambot.simulator.wire.info import InfoError, SimulatorInfo
    from streambot.simulator.wire.process import READY_LINE

    info_path = workdir / "simulator.json"
    cmd = [sys.executable, "-m", "streambot", "simulator", "--info-out", str(info_path)]
    cmd += ["--workers", str(workers), "--rtt-ms", str(rtt_ms)]
    for spec in synthetic:
        cmd += ["--synthetic", f"{spec.size}:{spec.name}"]
    cmd += [str(p.resolve()) for p in paths]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE
    )
    forward: asyncio.Task[None] | None = None
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(SIMULATOR_START_SECONDS):
            while True:
                line = (await proc.stdout.readline()).decode(errors="replace")
                if not line:
                    await proc.wait()
                    raise SimulatorFailed(
                        f"the simulator exited at start (status {proc.returncode})"
                    )
                if line.startswith(READY_LINE):
                    break
                print(line, end="", file=sys.stderr, flush=True)
        info = await asyncio.to_thread(SimulatorInfo.load, info_path)
        if info_out is not None:
            data = await asyncio.to_thread(info_path.read_bytes)
            await asyncio.to_thread(atomic_write, info_out, data, mode=0o600)
        forward = asyncio.create_task(_forward(proc.stdout))
        yield info
    except TimeoutError as exc:
        raise SimulatorFailed(
            f"the simulator was not ready within {SIMULATOR_START_SECONDS} s"
        ) from exc
    except InfoError as exc:
        raise SimulatorFailed(str(exc)) from exc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if forward is not None:
            forward.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await forward


async def _forward(stream: asyncio.StreamReader) -> None:
    """The simulator's own output goes to stderr, so stdout stays the demo's (links, replies)."""
    while line := await stream.readline():
        print(line.decode(errors="replace"), end="", file=sys.stderr, flush=True)


async def run_demo(
    base: Settings,
    *,
    host: str,
    port: int,
    rtt_ms: float,
    links_out: Path | None,
    paths: Sequence[Path],
    synthetic: Sequence[SyntheticFile] = (),
    workers: int = 2,
    read_stdin: bool = True,
    stop: asyncio.Event | None = None,
    telegram: str = "inproc",
    telegram_info_out: Path | None = None,
) -> None:
    """Serve until ``stop`` is set (the CLI sets it on SIGINT/SIGTERM) or the task is cancelled.

    ``telegram="inproc"`` answers pyrogram inside its Session (fast, one process);
    ``telegram="wire"`` starts ``python -m streambot simulator`` and talks MTProto to it over
    loopback TCP, so the demo pays for the whole real network stack.
    """
    stop = stop or asyncio.Event()
    with tempfile.TemporaryDirectory(prefix="streambot-demo-") as tmp:
        data_dir = base.data_dir if base.data_dir != Path("data") else Path(tmp)
        if telegram == "wire":
            from streambot.simulator.wire.client import pointed_at

            async with simulator_process(
                workdir=Path(tmp),
                rtt_ms=rtt_ms,
                workers=workers,
                paths=paths,
                synthetic=synthetic,
                info_out=telegram_info_out,
            ) as info:
                settings = simulated_settings(
                    base,
                    api_id=info.api_id,
                    api_hash=info.api_hash,
                    bot_token=info.bot_token,
                    worker_tokens=info.worker_tokens,
                    bin_channel=info.bin_channel,
                    admin_id=info.admin_id,
                    host=host,
                    port=port,
                    data_dir=data_dir,
                )
                with pointed_at(info.dcs, info.rsa_public_key, media_dcs=info.media_dcs):
                    await _serve(
                        settings,
                        stop,
                        simulator=None,
                        entries=lambda ctx: [
                            link_entry(ctx, f.path, f.name, f.size, f.message_id)
                            for f in info.files
                        ],
                        chat=ControlChat(info.control_url, info.admin_id),
                        links_out=links_out,
                        read_stdin=read_stdin,
                    )
        else:
            world = build_world(workers=workers, rtt=rtt_ms / 1000)
            settings = world_settings(base, world, host=host, port=port, data_dir=data_dir)
            await _serve(
                settings,
                stop,
                simulator=world.telegram,
                entries=lambda ctx: post_files(world, ctx, paths, synthetic),
                chat=WorldChat(world),
                links_out=links_out,
                read_stdin=read_stdin,
            )
    print("StreamBot demo stopped.", flush=True)


async def _serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    simulator: SimulatedTelegram | None,
    entries: Callable[[BotContext], list[dict[str, Any]]],
    chat: Chat,
    links_out: Path | None,
    read_stdin: bool,
) -> None:
    """The application and its web server, the links, and the admin chat, until ``stop``."""
    secret = ensure_link_secret(settings)
    app = await create_app(settings, link_secret=secret, simulator=simulator)
    runner = make_runner(app)
    loop = asyncio.get_running_loop()
    chat_task: asyncio.Task[None] | None = None
    try:
        await runner.setup()
        site = make_site(runner, settings.bind_host, settings.port)
        await site.start()
        found = entries(app[SERVICES].bot.ctx)
        if links_out is not None:
            atomic_write(links_out, json.dumps(found, indent=2).encode() + b"\n")
        print(f"StreamBot demo serving on {settings.public_base_url}", flush=True)
        for e in found:
            print(
                f"{e['name']}  {e['size']} bytes  {e['download_url']}  {e['watch_url']}",
                flush=True,
            )
        print("Type /help, /memory, /stats or /send PATH (you are the admin).", flush=True)
        admin_chat = AdminChat(chat)
        chat_task = asyncio.create_task(admin_chat.run())
        if read_stdin:
            admin_chat.start_reader(loop)
        await stop.wait()
    finally:
        if chat_task is not None:
            chat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await chat_task
        await runner.cleanup()
