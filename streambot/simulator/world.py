"""A ready-made simulated world (bots, storage channel, admin) and the settings that point at it.

Shared by the demo, the tests and the benchmarks so all three run the same scenario.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass, replace
from pathlib import Path

from streambot.config import Settings
from streambot.simulator.content import Content
from streambot.simulator.telegram import (
    MediaKind,
    SimBot,
    SimChannel,
    SimFile,
    SimulatedTelegram,
    SimUser,
)

DEMO_ADMIN_ID = 100_001
# The simulator accepts any API id/hash; these pass the config checks.
SIM_API_ID = 1
SIM_API_HASH = "0" * 32


@dataclass(slots=True)
class World:
    telegram: SimulatedTelegram
    main_bot: SimBot
    workers: list[SimBot]
    admin: SimUser
    channel: SimChannel

    @property
    def channel_id(self) -> int:
        return self.channel.chat_id

    def store(
        self,
        content: Content,
        *,
        name: str,
        mime_type: str | None = None,
        kind: MediaKind | None = None,
    ) -> tuple[SimFile, int]:
        """Post a file into the storage channel; returns it and its message id."""
        mime = mime_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        f = self.telegram.add_file(content, name=name, mime_type=mime, kind=kind or kind_for(mime))
        return f, self.telegram.post_file(self.channel, f)


def kind_for(mime: str) -> MediaKind:
    if mime.startswith("video/"):
        return "video"
    if mime.startswith("audio/"):
        return "audio"
    return "document"


def build_world(*, workers: int = 0, rtt: float = 0.0) -> World:
    telegram = SimulatedTelegram(rtt=rtt)
    main_bot = telegram.add_bot("streambot_demo_bot")
    worker_bots = [telegram.add_bot(f"streambot_worker{i}_bot") for i in range(1, workers + 1)]
    channel = telegram.add_channel("StreamBot storage", members=[main_bot, *worker_bots])
    admin = telegram.add_user("Admin", user_id=DEMO_ADMIN_ID)
    telegram.started(admin, main_bot)  # the demo admin has a chat with the bot, as admins should
    return World(telegram, main_bot, worker_bots, admin, channel)


def world_settings(
    base: Settings, world: World, *, host: str = "127.0.0.1", port: int = 8080, data_dir: Path
) -> Settings:
    """The operator's settings with the Telegram group replaced by the simulated world's."""
    return simulated_settings(
        base,
        bot_token=world.main_bot.token,
        worker_tokens=tuple(b.token for b in world.workers),
        bin_channel=world.channel_id,
        admin_id=DEMO_ADMIN_ID,
        host=host,
        port=port,
        data_dir=data_dir,
    )


def simulated_settings(
    base: Settings,
    *,
    bot_token: str,
    worker_tokens: tuple[str, ...],
    bin_channel: int,
    admin_id: int,
    host: str,
    port: int,
    data_dir: Path,
    api_id: int = SIM_API_ID,
    api_hash: str = SIM_API_HASH,
) -> Settings:
    """``base`` with a simulator's Telegram group (in-process or on the wire) and the demo's web side."""
    shown_host = host if host not in ("0.0.0.0", "::") else "127.0.0.1"
    return replace(
        base,
        api_id=api_id,
        api_hash=api_hash,
        bot_token=bot_token,
        worker_tokens=worker_tokens,
        bin_channel=bin_channel,
        bind_host=host,
        port=port,
        base_url=base.base_url or f"http://{shown_host}:{port}",
        admins=tuple(sorted({*base.admins, admin_id})),
        data_dir=data_dir,
        login_stagger_seconds=0.0,
    )
