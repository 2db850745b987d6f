"""What an operator meets first: the demo chat (alerts, /send, end of input), unreachable admins,
the real port in the links, argument errors without a traceback."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
from pathlib import Path

import pytest

from streambot.demo import AdminChat, WorldChat
from streambot.simulator.world import DEMO_ADMIN_ID, build_world

from .helpers import STARTUP_DEADLINE, StartApp, fetch, streambot, wait_for_file


class Output(io.StringIO):
    """stdout stand-in that wakes a waiter on every write."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def write(self, text: str) -> int:
        self.changed.set()
        return super().write(text)

    async def wait_for(self, needle: str, deadline: float = 10.0) -> str:
        async with asyncio.timeout(deadline):
            while needle not in self.getvalue():
                self.changed.clear()
                await self.changed.wait()
        return self.getvalue()


async def test_demo_chat_prints_alerts_rejects_non_files_and_survives_end_of_input(
    tmp_path: Path, start_app: StartApp
) -> None:
    world = build_world()
    app = await start_app(world)
    out = Output()
    chat = AdminChat(WorldChat(world), out=out)
    task = asyncio.create_task(chat.run())
    try:
        # An alert nobody asked for (memory critical, a failed client) reaches the admin chat.
        assert await app.services.notify("Memory critical: 97% of the limit") == 1
        text = await out.wait_for("Memory critical")
        assert "(message from the bot, not a reply)\nMemory critical" in text

        await chat.queue.put(f"/send {tmp_path}")  # a folder
        await out.wait_for("is not a regular file")
        await chat.queue.put("/send /dev/null")  # a device
        text = await out.wait_for("/dev/null is not a regular file")
        assert world.telegram.replies(world.admin)[-1].text.startswith("Memory critical")

        await chat.queue.put(None)  # what the stdin reader sends at end of input
        await out.wait_for("end of input: the server keeps running; Ctrl-C (SIGINT)")
        await chat.queue.put("/help")  # still chatting
        text = await out.wait_for("Commands:")
        assert "not a reply)\nCommands:" not in text  # an answer, not an alert
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_admins_the_bot_cannot_reach_are_named_at_start_up(
    start_app: StartApp, caplog: pytest.LogCaptureFixture
) -> None:
    world = build_world()
    stranger = world.telegram.add_user("Never pressed Start")
    with caplog.at_level(logging.WARNING, logger="streambot.app"):
        await start_app(world, admins=(DEMO_ADMIN_ID, stranger.user_id, 987654321))
    (warning,) = [r.getMessage() for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert f"admin(s) {stranger.user_id}, 987654321 cannot be reached" in warning
    assert str(DEMO_ADMIN_ID) not in warning


async def test_reachable_admins_give_no_warning(
    start_app: StartApp, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="streambot.app"):
        await start_app(build_world())
    assert not [r for r in caplog.records if "cannot be reached" in r.getMessage()]


async def test_demo_on_port_0_prints_links_with_the_bound_port(tmp_path: Path, start_demo) -> None:
    links = tmp_path / "links.json"
    demo = await start_demo("--port", "0", "--links-out", str(links))
    await wait_for_file(links, STARTUP_DEADLINE)
    entries = json.loads(links.read_text())
    port = int(entries[0]["download_url"].split(":")[2].split("/")[0])
    assert port != 0
    lines = await demo.read_until("serving on")
    assert f"http://127.0.0.1:{port}" in lines[-1]
    status, _ = await fetch(entries[-1]["download_url"])
    assert status == 200
    code, _ = await demo.stop(signal.SIGTERM)
    assert code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "argument --port: 70000 is not a TCP port (0-65535"),
        (["--port", "-1"], "argument --port: -1 is not a TCP port"),
        (["--port", "http"], "argument --port: 'http' is not a whole number"),
        (["--rtt-ms", "-5"], "argument --rtt-ms: -5 must be between 0 and 10000"),
        (["--rtt-ms", "nan"], "argument --rtt-ms: nan must be between 0 and 10000"),
        (["--workers", "-2"], "argument --workers: -2 must be between 0 and 64"),
        (["--synthetic", "0"], "argument --synthetic: a synthetic file needs at least one byte"),
    ],
)
def test_demo_arguments_are_checked_without_a_traceback(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = streambot("demo", *args, cwd=tmp_path, timeout=30)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["run", "check", "demo", "memlog"])
def test_each_command_help_states_purpose_defaults_and_exit_statuses(
    tmp_path: Path, command: str
) -> None:
    result = streambot(command, "--help", cwd=tmp_path, timeout=30)
    assert result.returncode == 0
    assert "exit status: 0 " in result.stdout
    if command == "demo":
        assert "(default: 8080; 0 = any free port" in " ".join(result.stdout.split())


def test_version(tmp_path: Path) -> None:
    from streambot import __version__

    result = streambot("--version", cwd=tmp_path, timeout=30)
    assert (result.returncode, result.stdout.strip()) == (0, f"streambot {__version__}")


def test_top_level_help_lists_every_command_with_its_purpose(tmp_path: Path) -> None:
    result = streambot("--help", cwd=tmp_path, timeout=30)
    text = " ".join(result.stdout.split())
    for purpose in (
        "run the bot and the download server against Telegram",
        "validate the configuration and exit",
        "run everything offline on the Telegram simulator",
        "summarise the memory log",
    ):
        assert purpose in text


async def test_access_log_shows_only_a_prefix_of_link_tokens(tmp_path: Path, start_demo) -> None:
    """The real server's access log (stderr at INFO): the request is there, the token is not."""
    links = tmp_path / "links.json"
    demo = await start_demo("--port", "0", "--links-out", str(links))
    await wait_for_file(links, STARTUP_DEADLINE)
    entries = json.loads(links.read_text())
    url = entries[-1]["download_url"]
    token = url.split("/dl/", 1)[1].split("/", 1)[0]
    assert (await fetch(url))[0] == 200
    assert (await fetch(entries[-1]["watch_url"]))[0] == 200
    code, _ = await demo.stop(signal.SIGTERM)
    assert code == 0
    log = demo.stderr.read_text()
    assert f'"GET /dl/{token[:6]}…/' in log
    assert f'"GET /watch/{token[:6]}…/' in log
    assert token not in log
