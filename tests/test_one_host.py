"""Two StreamBot processes on one host: one port (REUSE_PORT), one SQLite file, each its own bots.

Over the wire, as an operator runs it (README "Several processes on one host"): a simulator process
is Telegram; one `run --telegram` process is `NODE_ROLE=bot` (the main bot and a worker), the other
`NODE_ROLE=web` with a worker bot of its own (`POST /bots`); both listen on the same PORT, share one
`DATABASE_PATH` and one `LINK_SECRET`, and keep their own `DATA_DIR`. The kernel picks the process
for each new connection, so each request goes on a fresh connection and which process served it is
read from Telegram's side (GetFile requests per bot, counted by the simulator).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import aiohttp

from streambot import exitcodes
from streambot.simulator.wire.info import SimulatorInfo

from .helpers import Proc, Start, call, free_port, reply_from_bot, start_simulator

SECRET = "one-host-link-secret-0123456789abcdef"
USER = 424242
GUARD_TTL = 1.0
# With N fresh connections spread by SO_REUSEPORT's hash, one process misses all of them with
# probability 2**-N: at 40 that never happens.
SPREAD = 40


def env_file(tmp_path: Path, info: SimulatorInfo, name: str, port: int, **extra: str) -> Path:
    values = {
        "API_ID": str(info.api_id),
        "API_HASH": info.api_hash,
        "BIN_CHANNEL": str(info.bin_channel),
        "BASE_URL": f"http://127.0.0.1:{port}",
        "PORT": str(port),
        "REUSE_PORT": "true",
        "DATABASE_PATH": str(tmp_path / "shared" / "streambot.sqlite3"),
        "LINK_SECRET": SECRET,
        "CACHE_GUARD_TTL": str(GUARD_TTL),
        "DATA_DIR": str(tmp_path / name / "data"),
        "LOG_DIR": str(tmp_path / name / "logs"),
        "LOG_LEVEL": "INFO",
        "LOGIN_STAGGER_SECONDS": "0",
        **extra,
    }
    env = tmp_path / f"{name}.env"
    env.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return env


async def requests_by_bot(info: SimulatorInfo, method: str) -> dict[str, int]:
    """How many ``method`` requests Telegram answered for each bot (id), from its side."""
    status, stats = await call("GET", info.control_url + "/stats")
    assert status == 200
    return {bot: m.get(method, 0) for bot, m in stats["requests"]["by_bot"].items()}


async def fresh_get(url: str) -> tuple[int, bytes]:
    """One request on a connection of its own, so the kernel picks a process for it."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http, http.get(url) as resp:
        body = await resp.read()
        return resp.status, body


async def test_two_processes_share_a_port_and_a_sqlite_file_with_bots_of_their_own(
    tmp_path: Path, start_streambot: Start
) -> None:
    sim, info = await start_simulator(start_streambot, tmp_path, "--workers", "1")
    info_file = str(tmp_path / "sim" / "info.json")
    status, web_bot = await call("POST", info.control_url + "/bots", {})
    assert status == 201
    port = free_port()
    (tmp_path / "shared").mkdir()
    bot_env = env_file(
        tmp_path,
        info,
        "bot",
        port,
        NODE_ROLE="bot",
        BOT_TOKEN=info.bot_token,
        MULTI_TOKEN1=info.worker_tokens[0],
    )
    web_env = env_file(tmp_path, info, "web", port, NODE_ROLE="web", MULTI_TOKEN1=web_bot["token"])
    # Started together on a fresh SQLite file: both open it (the WAL switch waits its turn).
    nodes: list[Proc] = [
        await start_streambot("--env-file", str(e), "run", "--telegram", info_file)
        for e in (bot_env, web_env)
    ]
    await asyncio.gather(*(n.wait_stderr("serving on") for n in nodes))

    # A third process given the web process's worker token (its own DATA_DIR, so no session
    # lock stops it) is refused by the claim in the shared file before it logs in.
    copy_env = env_file(
        tmp_path, info, "copy", free_port(), NODE_ROLE="web", MULTI_TOKEN1=web_bot["token"]
    )
    logins = await requests_by_bot(info, "auth.ImportBotAuthorization")
    copy = await start_streambot("--env-file", str(copy_env), "run", "--telegram", info_file)
    async with asyncio.timeout(60):
        assert await copy.proc.wait() == exitcodes.STARTUP
    assert (
        await requests_by_bot(info, "auth.ImportBotAuthorization") == logins
    )  # Telegram never saw it log in
    refusal = copy.stderr.read_text()
    web_id = str(web_bot["bot"])
    assert f"bot {web_id} by the node at " in refusal
    assert re.search(r"by the node at [^ ]+/web/data \(\d+ s ago\)", refusal), refusal
    assert web_bot["token"] not in refusal
    assert not list((tmp_path / "copy" / "data" / "sessions").glob("*.session*"))

    payload = tmp_path / "clip.mp4"
    payload.write_bytes(os.urandom((1 << 20) + 4321))
    reply = await reply_from_bot(info, USER, {"file": {"path": str(payload)}})
    link = next(u for u in reply["links"] if "/dl/" in u)

    # The bot process's link is served byte-exact by both processes: fresh connections until the
    # web process's own bot has fetched from Telegram, and the bot process's bots too.
    before = await requests_by_bot(info, "upload.GetFile")
    for _ in range(SPREAD):
        assert await fresh_get(link) == (200, payload.read_bytes())
    after = await requests_by_bot(info, "upload.GetFile")
    grew = {bot for bot, n in after.items() if n > before.get(bot, 0)}
    assert web_id in grew, after
    assert grew - {web_id}, after  # the bot process served some too

    # /revoke on the bot process reaches the web process through the shared file within the
    # guard's TTL: then every fresh connection, whichever process takes it, gets 410.
    await reply_from_bot(info, USER, {"text": f"/revoke {link}"})
    async with asyncio.timeout(10 + GUARD_TTL):
        streak = 0
        while streak < SPREAD:
            status, _ = await fresh_get(link)
            streak = streak + 1 if status == 410 else 0
            assert status in (200, 410)

    for node in nodes:
        node.proc.send_signal(signal.SIGTERM)
    for node in nodes:
        async with asyncio.timeout(30):
            assert await node.proc.wait() == 0, node.stderr.read_text()
        err = node.stderr.read_text()
        assert "Traceback" not in err
        assert "database is locked" not in err
        assert info.bot_token not in err
        assert web_bot["token"] not in err
    # Each process logged in with its own bots only, in its own sessions folder.
    main_id, worker_id = (t.split(":", 1)[0] for t in (info.bot_token, info.worker_tokens[0]))
    expected = {"bot": {f"main-{main_id}", f"worker-{worker_id}"}, "web": {f"worker-{web_id}"}}
    for name, names in expected.items():
        folder = tmp_path / name / "data" / "sessions"
        assert {p.name.split(".session")[0] for p in folder.glob("*.session*")} == names
    # A clean stop released the claims: the same token now starts at once in another folder.
    copy = await start_streambot("--env-file", str(copy_env), "run", "--telegram", info_file)
    await copy.wait_stderr("serving on")
    copy.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        assert await copy.proc.wait() == 0, copy.stderr.read_text()
    code, _ = await sim.stop()
    assert code == 0
