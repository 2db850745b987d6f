"""``python -m streambot demo``: the whole application on the offline Telegram simulator.

The simulator plays Telegram: a main bot, worker bots, the storage channel and a demo admin user.
Each PATH is posted into the storage channel and served lazily from disk; standard input is the
admin's private chat with the bot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
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


def disk_file(telegram: SimulatedTelegram, path: Path) -> SimFile:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return telegram.add_file(
        DiskContent.of(path), name=path.name, mime_type=mime, kind=kind_for(mime)
    )


def post_files(world: World, ctx: BotContext, paths: Sequence[Path]) -> list[dict[str, Any]]:
    telegram = world.telegram
    channel = world.channel
    entries = []
    if paths:
        files = [(p, disk_file(telegram, DiskContent.of(p))) for p in paths]
    else:
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
        def read() -> None:
            for line in sys.stdin:
                asyncio.run_coroutine_threadsafe(self.queue.put(line.rstrip("\n")), loop).result()
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
            for reply in await self.say(line):
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
    workers: int = 2,
    read_stdin: bool = True,
) -> None:
    world = build_world(workers=workers, rtt=rtt_ms / 1000)
    with tempfile.TemporaryDirectory(prefix="streambot-demo-") as tmp:
        data_dir = base.data_dir if base.data_dir != Path("data") else Path(tmp)
        settings = world_settings(base, world, host=host, port=port, data_dir=data_dir)
        secret = ensure_link_secret(settings)
        app = await create_app(settings, link_secret=secret, simulator=world.telegram)
        runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=settings.shutdown_grace_seconds
        )
        await runner.setup()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            entries = post_files(world, app[SERVICES].bot.ctx, paths)
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
            chat_task.cancel()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await runner.cleanup()
        print("StreamBot demo stopped.", flush=True)
