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
import mimetypes
import re
import sys
import tempfile
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from streambot.app import SERVICES, create_app
from streambot.atomicfile import atomic_write
from streambot.bot.handlers import BotContext
from streambot.config import Settings, ensure_link_secret
from streambot.simulator import (
    DiskContent,
    SimFile,
    SimulatedTelegram,
    SyntheticContent,
)
from streambot.simulator.world import World, build_world, kind_for, world_settings

log = logging.getLogger(__name__)

SAMPLE_FILES = (
    ("sample-video.mp4", "video/mp4", 24 * 1024 * 1024 + 12345),
    ("sample-archive.zip", "application/zip", 3 * 1024 * 1024),
    ("sample-notes.txt", "text/plain", 4096 + 17),
)


_SIZE = re.compile(r"(\d+)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``4096``, ``512K``, ``24MiB``, ``1GiB``, ``2G``: binary units; ValueError otherwise."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r} (examples: 4096, 512K, 24MiB, 1GiB)")
    return int(match[1]) * _UNITS[match[2].lower()]


@dataclass(frozen=True, slots=True)
class SyntheticFile:
    """A ``--synthetic SIZE[:NAME]`` file: deterministic bytes of any size, nothing allocated.

    The seed comes from the name, so a name always has the same bytes in every run; the
    benchmarks rely on that to write an identical local copy for comparison.
    """

    size: int
    name: str

    @property
    def seed(self) -> int:
        return zlib.crc32(self.name.encode())

    @classmethod
    def parse(cls, text: str) -> SyntheticFile:
        size_text, _, name = text.partition(":")
        size = parse_size(size_text)
        if size < 1:
            raise ValueError("a synthetic file needs at least one byte")
        name = name.strip() or f"synthetic-{size}.bin"
        if "/" in name or "\x00" in name:
            raise ValueError(f"not a file name: {name!r}")
        return cls(size, name)


def disk_file(telegram: SimulatedTelegram, content: DiskContent) -> SimFile:
    """Register a disk file with the simulator; its bytes are read later, per request."""
    name = content.path.name
    mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return telegram.add_file(content, name=name, mime_type=mime, kind=kind_for(mime))


def post_files(
    world: World,
    ctx: BotContext,
    paths: Sequence[Path],
    synthetic: Sequence[SyntheticFile] = (),
) -> list[dict[str, Any]]:
    """Post PATHs, then synthetic files; the sample set only when neither was given."""
    telegram = world.telegram
    channel = world.channel
    entries = []
    files: list[tuple[Path | None, SimFile]] = [
        (p, disk_file(telegram, DiskContent.of(p))) for p in paths
    ]
    for spec in synthetic:
        mime = mimetypes.guess_type(spec.name)[0] or "application/octet-stream"
        content = SyntheticContent(spec.size, spec.seed)
        files.append(
            (None, telegram.add_file(content, name=spec.name, mime_type=mime, kind=kind_for(mime)))
        )
    if not files:
        files = [
            (
                None,
                telegram.add_file(
                    SyntheticContent(size, seed), name=name, mime_type=mime, kind=kind_for(mime)
                ),
            )
            for seed, (name, mime, size) in enumerate(SAMPLE_FILES, 1)
        ]
    for path, f in files:
        message_id = telegram.post_file(channel, f)
        found = ctx.make_links(message_id, f.name)
        entries.append(
            {
                "path": str(path.resolve()) if path else None,
                "name": f.name,
                "size": f.size,
                "download_url": found.download,
                "watch_url": found.watch,
            }
        )
    return entries


class AdminChat:
    """Standard input as the demo admin's private chat with the bot; replies go to stdout."""

    def __init__(self, world: World) -> None:
        self.world = world
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

    async def say(self, text: str) -> list[str]:
        """Send one line as the admin; return the bot's replies."""
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
            replies = await tg.wait_replies(admin, before + 1, timeout=15)
        except TimeoutError:
            return ["(demo) the bot did not answer within 15 s"]
        return [r.text for r in replies[before:]]

    async def run(self) -> None:
        while True:
            line = await self.queue.get()
            if not line or not line.strip():
                continue
            try:
                replies = await self.say(line)
            except (LookupError, OSError) as exc:  # e.g. the bot is restarting; keep chatting
                replies = [f"(demo) could not deliver the message: {exc}"]
            for reply in replies:
                print(reply, flush=True)
                print("-" * 40, flush=True)


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
) -> None:
    """Serve until ``stop`` is set (the CLI sets it on SIGINT/SIGTERM) or the task is cancelled."""
    stop = stop or asyncio.Event()
    world = build_world(workers=workers, rtt=rtt_ms / 1000)
    with tempfile.TemporaryDirectory(prefix="streambot-demo-") as tmp:
        data_dir = base.data_dir if base.data_dir != Path("data") else Path(tmp)
        settings = world_settings(base, world, host=host, port=port, data_dir=data_dir)
        secret = ensure_link_secret(settings)
        app = await create_app(settings, link_secret=secret, simulator=world.telegram)
        runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=settings.shutdown_grace_seconds
        )
        loop = asyncio.get_running_loop()
        chat_task: asyncio.Task[None] | None = None
        try:
            await runner.setup()
            site = web.TCPSite(runner, host, port)
            await site.start()
            entries = post_files(world, app[SERVICES].bot.ctx, paths, synthetic)
            if links_out is not None:
                atomic_write(links_out, json.dumps(entries, indent=2).encode() + b"\n")
            print(f"StreamBot demo serving on {settings.public_base_url}", flush=True)
            for e in entries:
                print(
                    f"{e['name']}  {e['size']} bytes  {e['download_url']}  {e['watch_url']}",
                    flush=True,
                )
            print("Type /help, /memory, /stats or /send PATH (you are the admin).", flush=True)
            chat = AdminChat(world)
            chat_task = asyncio.create_task(chat.run())
            if read_stdin:
                chat.start_reader(loop)
            await stop.wait()
        finally:
            if chat_task is not None:
                chat_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await chat_task
            await runner.cleanup()
        print("StreamBot demo stopped.", flush=True)
