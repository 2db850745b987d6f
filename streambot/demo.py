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
import socket
import stat
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

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
    *,
    dc_id: int | None = None,
) -> list[dict[str, Any]]:
    """Post PATHs, then synthetic files; the sample set only when neither was given.

    ``dc_id`` stores them on that DC instead of the bots' home DC.
    """
    entries = []
    for path, f in seed_files(world.telegram, paths, synthetic, dc_id=dc_id):
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

    async def unsolicited(self) -> list[str]:
        """Wait for messages the bot sent the admin that no ``say`` took as its reply (alerts)."""
        ...


def regular_file(text: str) -> Path | str:
    """The absolute path ``/send PATH`` names, or a (demo) note why it cannot be sent.

    Blocking (run it in a thread). Only regular files: a folder, a FIFO or /dev/zero would be
    "sent" with a size that is no file's size (0, or endless) and the links would serve nonsense.
    """
    path = Path(text.strip()).expanduser()
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return f"(demo) {path} is not a regular file (a folder, a device or a pipe)"
        with path.open("rb"):  # readable by us, not just present
            pass
    except OSError as exc:
        return f"(demo) cannot read {path}: {exc.strerror}"
    return path.resolve()  # absolute: the wire simulator's working directory may differ


class WorldChat:
    """The admin's chat with an in-process simulated world."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._seen = 0  # highest message id returned by say() or unsolicited()
        self._idle = asyncio.Event()  # no say() waiting for its reply
        self._idle.set()

    async def say(self, text: str) -> list[str]:
        tg, admin, bot = self.world.telegram, self.world.admin, self.world.main_bot
        text = text.strip()
        if text.startswith("/send ") or text == "/send":
            found = await asyncio.to_thread(regular_file, text[5:])
            if isinstance(found, str):
                return [found]
            content = await asyncio.to_thread(DiskContent.of, found)
            message: dict[str, Any] = {"file": disk_file(tg, content)}
        else:
            message = {"text": text}
        self._idle.clear()
        try:
            before = len(tg.replies(admin))
            await tg.send_user_message(admin, bot, **message)
            try:
                replies = await tg.wait_replies(admin, before + 1, timeout=REPLY_WAIT_SECONDS)
            except TimeoutError:
                return [f"(demo) the bot did not answer within {REPLY_WAIT_SECONDS} s"]
            self._seen = max([self._seen, *(r.message_id for r in replies)])
            return [r.text for r in replies[before:]]
        finally:
            self._idle.set()

    async def unsolicited(self) -> list[str]:
        tg, admin = self.world.telegram, self.world.admin
        while True:
            await self._idle.wait()  # a reply to a command belongs to that command
            fresh = [m for m in tg.replies(admin) if m.message_id > self._seen]
            if fresh:
                self._seen = max(m.message_id for m in fresh)
                return [m.text for m in fresh]
            # Silent for hours is normal: wait in slices; cancelling the caller ends it.
            with contextlib.suppress(TimeoutError):
                await tg.wait_replies(admin, len(tg.replies(admin)) + 1, timeout=3600)


class ControlChat:
    """The admin's chat with a wire simulator, through its control API (POST /messages, GET /replies)."""

    def __init__(self, control_url: str, admin_id: int) -> None:
        self.url = control_url
        self.admin_id = admin_id
        self._seen = 0  # replies taken by say() or unsolicited(), counted from the first
        self._idle = asyncio.Event()  # no say() waiting for its reply
        self._idle.set()

    async def say(self, text: str) -> list[str]:
        text = text.strip()
        body: dict[str, Any] = {"user_id": self.admin_id, "text": text}
        if text.startswith("/send ") or text == "/send":
            found = await asyncio.to_thread(regular_file, text[5:])
            if isinstance(found, str):
                return [found]
            body = {"user_id": self.admin_id, "file": {"path": str(found)}}
        timeout = aiohttp.ClientTimeout(total=REPLY_WAIT_SECONDS + 10)
        self._idle.clear()
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http:
                before = len(await self._replies(http, count=0))
                async with http.post(self.url + "/messages", json=body) as resp:
                    if resp.status != 201:
                        reason = (await resp.json(content_type=None) or {}).get(
                            "error", resp.reason
                        )
                        return [f"(demo) could not deliver the message: {reason}"]
                replies = await self._replies(http, count=before + 1)
        finally:
            self._idle.set()
        self._seen = max(self._seen, len(replies))
        if len(replies) <= before:
            return [f"(demo) the bot did not answer within {REPLY_WAIT_SECONDS} s"]
        return [str(r["text"]) for r in replies[before:]]

    async def unsolicited(self) -> list[str]:
        timeout = aiohttp.ClientTimeout(total=REPLY_WAIT_SECONDS + 10)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            if not self._seen:
                self._seen = len(await self._replies(http, count=0))
            while True:
                await self._idle.wait()
                replies = await self._replies(http, count=self._seen + 1)  # long poll
                if len(replies) > self._seen and self._idle.is_set():
                    fresh, self._seen = replies[self._seen :], len(replies)
                    return [str(r["text"]) for r in fresh]

    async def _replies(self, http: aiohttp.ClientSession, *, count: int) -> list[dict[str, Any]]:
        query = {"user_id": str(self.admin_id), "count": str(count)}
        if count:
            query["wait"] = str(REPLY_WAIT_SECONDS)
        async with http.get(self.url + "/replies", params=query) as resp:
            resp.raise_for_status()
            replies: list[dict[str, Any]] = (await resp.json())["replies"]
            return replies


class AdminChat:
    """Standard input as the demo admin's private chat with the bot; the bot's messages go to stdout.

    Messages nobody asked for (alerts: memory critical, a client that failed) are printed too,
    marked as such, so the demo shows everything an admin would see.
    """

    def __init__(self, chat: Chat, out: TextIO | None = None) -> None:
        self.chat = chat
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=100)
        self._out = out

    def _print(self, text: str) -> None:
        print(text, file=self._out or sys.stdout, flush=True)

    def start_reader(self, loop: asyncio.AbstractEventLoop) -> None:
        # A thread, because a blocking stdin read cannot go on the loop; daemon, so a read that
        # never returns does not keep the process alive after the demo stops.
        def read() -> None:
            try:
                for line in sys.stdin:
                    put = self.queue.put(line.rstrip("\n"))
                    asyncio.run_coroutine_threadsafe(put, loop).result()
                # End of input does not stop the demo (it may run in the background): say so.
                asyncio.run_coroutine_threadsafe(self.queue.put(None), loop).result()
            except RuntimeError:  # the loop closed: the demo is stopping
                return

        threading.Thread(target=read, name="demo-stdin", daemon=True).start()

    async def watch(self) -> None:
        """Print what the bot sends unasked, until cancelled."""
        while True:
            try:
                messages = await self.chat.unsolicited()
            except (OSError, aiohttp.ClientError):  # the simulator is going away
                return
            for text in messages:
                self._print("(message from the bot, not a reply)")
                self._print(text)
                self._print("-" * 40)

    async def run(self) -> None:
        watcher = asyncio.create_task(self.watch(), name="demo-alerts")
        try:
            await self._chat()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _chat(self) -> None:
        while True:
            line = await self.queue.get()
            if line is None:
                self._print(
                    "(demo) end of input: the server keeps running; Ctrl-C (SIGINT) or SIGTERM "
                    "stops it."
                )
                continue
            if not line.strip():
                continue
            try:
                replies = await self.chat.say(line)
            except (LookupError, OSError, aiohttp.ClientError) as exc:
                # e.g. the bot is restarting; keep chatting
                replies = [f"(demo) could not deliver the message: {exc}"]
            for reply in replies:
                self._print(reply)
                self._print("-" * 40)


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (0 = any free port), bound before the settings are made
    so the links carry the real port. OSError when the address is busy or not local."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    return socket.create_server((host, port), family=family, backlog=128)


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
    file_dc: int | None = None,
) -> AsyncIterator[SimulatorInfo]:
    """``python -m streambot simulator`` as a child process, for as long as the block runs.

    Readiness is its "ready" line on stdout (after the info file is complete), not a poll; the
    rest of its output goes to our stderr. On exit it gets SIGTERM, then SIGKILL after 10 s.
    """
    from streambot.simulator.wire.info import InfoError, SimulatorInfo
    from streambot.simulator.wire.process import READY_LINE

    info_path = workdir / "simulator.json"
    # --exit-with-parent: a demo killed outright (SIGKILL, OOM) must not leave Telegram running.
    cmd = [sys.executable, "-m", "streambot", "simulator", "--info-out", str(info_path)]
    cmd += ["--exit-with-parent"]
    cmd += ["--workers", str(workers), "--rtt-ms", str(rtt_ms)]
    if file_dc is not None:
        cmd += ["--file-dc", str(file_dc)]
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
    file_dc: int | None = None,
) -> None:
    """Serve until ``stop`` is set (the CLI sets it on SIGINT/SIGTERM) or the task is cancelled.

    ``telegram="inproc"`` answers pyrogram inside its Session (fast, one process);
    ``telegram="wire"`` starts ``python -m streambot simulator`` and talks MTProto to it over
    loopback TCP, so the demo pays for the whole real network stack. ``file_dc`` puts the
    served files on that DC (default: the bots' home DC), in either mode.
    """
    stop = stop or asyncio.Event()
    with (
        tempfile.TemporaryDirectory(prefix="streambot-demo-") as tmp,
        contextlib.closing(listen_socket(host, port)) as sock,  # closed after the server
    ):
        port = sock.getsockname()[1]
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
                file_dc=file_dc,
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
                        sock=sock,
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
                sock=sock,
                simulator=world.telegram,
                entries=lambda ctx: post_files(world, ctx, paths, synthetic, dc_id=file_dc),
                chat=WorldChat(world),
                links_out=links_out,
                read_stdin=read_stdin,
            )
    print("StreamBot demo stopped.", flush=True)


async def _serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    sock: socket.socket,
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
        site = make_site(runner, settings.bind_host, settings.port, sock=sock)
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
