"""Telegram on the wire, as processes: the simulator, its control API, ``run --telegram``, the wire demo.

Every test here starts real processes that talk over loopback sockets: the simulator speaks MTProto
to pyrogram's own network stack and HTTP on its control API. Waits are on process output (a ready
line, an info file written atomically) or on the control API's event-driven long poll.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from streambot.simulator.content import synthetic_bytes
from streambot.simulator.samples import SAMPLE_FILES, SyntheticFile
from streambot.simulator.wire.info import SimulatorInfo

from .helpers import (
    STARTUP_DEADLINE,
    Proc,
    Start,
    call,
    eventually,
    fetch,
    free_port,
    start_simulator,
    wait_for_file,
)

INFO_KEYS = {
    "control_url",
    "dcs",
    "api_id",
    "api_hash",
    "bot_token",
    "worker_tokens",
    "bin_channel",
    "admin_id",
    "rsa_public_key",
    "files",
}


# ---------------------------------------------------------------------- the simulator process


async def test_simulator_writes_its_info_file_and_stops_on_sigterm(
    tmp_path: Path, start_streambot: Start
) -> None:
    """Info JSON written atomically and owner-only with every field; SIGTERM exits 0 cleanly."""
    disk = tmp_path / "clip.mp4"
    disk.write_bytes(os.urandom(5000))
    sim, info = await start_simulator(
        start_streambot,
        tmp_path,
        "--workers",
        "1",
        "--file-dc",
        "4",
        "--synthetic",
        "2MiB:big.bin",
        str(disk),
    )
    info_path = tmp_path / "sim" / "info.json"
    data = json.loads(info_path.read_text())
    assert set(data) >= INFO_KEYS
    assert [p.name for p in info_path.parent.iterdir()] == ["info.json"]  # no temp file left
    assert stat.S_IMODE(info_path.stat().st_mode) == 0o600  # it holds the bot tokens
    assert len(info.worker_tokens) == 1
    assert info.rsa_public_key.startswith("-----BEGIN")
    assert set(info.dcs) >= {1, 2, 3, 4, 5}
    assert len({port for _, port in info.dcs.values()}) == len(info.dcs)  # a port per DC
    assert [(f.name, f.size, f.dc, f.path) for f in info.files] == [
        ("clip.mp4", 5000, 4, str(disk.resolve())),
        ("big.bin", 2 << 20, 4, None),
    ]
    for _, port in info.dcs.values():  # every DC accepts TCP connections
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()
    status, shown = await call("GET", info.control_url + "/")
    assert status == 200
    assert shown["dcs"] == data["dcs"]

    code, rest = await sim.stop(signal.SIGTERM)
    assert code == 0
    assert "StreamBot simulator stopped." in rest
    assert "Traceback" not in sim.stderr.read_text()
    with pytest.raises(ConnectionRefusedError):  # the ports are closed
        await asyncio.open_connection("127.0.0.1", info.dcs[2][1])


async def test_simulator_without_files_posts_the_sample_set(
    tmp_path: Path, start_streambot: Start
) -> None:
    sim, info = await start_simulator(start_streambot, tmp_path)
    assert [(f.name, f.size) for f in info.files] == [(n, size) for n, _, size in SAMPLE_FILES]
    code, _ = await sim.stop(signal.SIGINT)
    assert code == 0


BAD_REQUESTS = [
    ("POST", "/faults", {"kind": "meteor"}, "kind must be one of"),
    ("POST", "/faults", {"kind": "flood_wait"}, "needs seconds"),
    ("POST", "/faults", {"kind": "rst", "dc": 9}, "dc must be one of"),
    ("POST", "/faults", {"kind": "rst", "bot": 42}, "no bot with id 42"),
    ("POST", "/faults", [1, 2], "JSON object"),
    ("POST", "/limits", {"rtt_ms": -5}, "rtt_ms must be between"),
    ("POST", "/limits", {}, "give rtt_ms"),
    ("POST", "/messages", {"text": "hi"}, "user_id is required"),
    ("POST", "/messages", {"user_id": 5}, "give text or file"),
    ("POST", "/messages", {"user_id": 5, "file": {"path": "/nonexistent"}}, "cannot read"),
    ("POST", "/messages", {"user_id": 5, "file": {"size": 0, "name": "a"}}, "file.size"),
    ("GET", "/replies", None, "user_id is required"),
    ("GET", "/replies?user_id=x", None, "must be integers"),
    ("GET", "/replies?user_id=1&count=1&wait=3600", None, "wait between"),
]


async def test_control_api_rejects_bad_input_with_400_and_a_reason(
    tmp_path: Path, start_streambot: Start
) -> None:
    """Each bad request gets 400 and its reason over real HTTP; the simulator logs no traceback."""
    sim, info = await start_simulator(start_streambot, tmp_path, "--workers", "0")
    for method, path, body, reason in BAD_REQUESTS:
        status, answer = await call(method, info.control_url + path, body)
        assert (status, reason in answer["error"]) == (400, True), (method, path, body, answer)
    async with aiohttp.ClientSession() as http:  # not JSON at all
        async with http.post(info.control_url + "/faults", data=b"{nope") as resp:
            assert resp.status == 400
            assert "not JSON" in (await resp.json())["error"]
        async with http.get(info.control_url + "/nowhere") as resp:
            assert resp.status == 404
    code, _ = await sim.stop()
    assert code == 0
    assert "Traceback" not in sim.stderr.read_text()


async def test_control_api_accepts_faults_limits_and_reports_stats(
    tmp_path: Path, start_streambot: Start
) -> None:
    sim, info = await start_simulator(start_streambot, tmp_path, "--workers", "0")
    url = info.control_url
    status, answer = await call("POST", url + "/faults", {"kind": "flood_wait", "seconds": 3})
    assert status == 201
    assert answer["fault"]["message"] == "FLOOD_WAIT_3"
    status, _ = await call("POST", url + "/faults", {"kind": "stall", "seconds": 1, "dc": 2})
    assert status == 201
    status, answer = await call("DELETE", url + "/faults")
    assert (status, answer["cleared_rpc_faults"]) == (200, 1)
    status, answer = await call("POST", url + "/limits", {"rtt_ms": 10, "bandwidth_mib_s": 64})
    assert (status, answer["limits"]) == (200, {"rtt_ms": 10.0, "bandwidth_mib_s": 64.0})
    status, stats = await call("GET", url + "/stats")
    assert status == 200
    assert stats["requests"]["total"] == 0
    assert "connections" in stats
    code, _ = await sim.stop()
    assert code == 0


# ---------------------------------------------------------------------- run --telegram FILE


def run_env(
    tmp_path: Path, info: SimulatorInfo, name: str, port: int, *, bot_token: str = ""
) -> Path:
    """A config.env for ``run`` with the simulator's Telegram group (as an operator would write)."""
    env = tmp_path / f"{name}.env"
    values = {
        "API_ID": str(info.api_id),
        "API_HASH": info.api_hash,
        "BOT_TOKEN": bot_token or info.bot_token,
        "BIN_CHANNEL": str(info.bin_channel),
        "BASE_URL": f"http://127.0.0.1:{port}",
        "PORT": str(port),
        "DATA_DIR": str(tmp_path / name / "data"),
        "LOG_DIR": str(tmp_path / name / "logs"),
        "LOG_LEVEL": "INFO",
    }
    if not bot_token:  # the simulator's own fleet; a node with its own bot runs without workers
        values.update({f"MULTI_TOKEN{i}": t for i, t in enumerate(info.worker_tokens, 1)})
    env.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return env


async def send_file_and_fetch_link(
    info: SimulatorInfo,
    payload: str,
    expected: bytes,
    *,
    user: int,
    port: int,
    bot: int | None = None,
) -> None:
    """POST /messages with a file, read the bot's reply from GET /replies, download its link."""
    body: dict[str, Any] = {"user_id": user, "file": {"path": payload}}
    if bot is not None:
        body["bot"] = bot
    status, sent = await call("POST", info.control_url + "/messages", body)
    assert status == 201, sent
    status, got = await call(
        "GET", info.control_url + "/replies", params={"user_id": user, "count": 1, "wait": 30}
    )
    assert status == 200
    assert got["replies"], "the bot did not answer over the wire"
    download = next(u for u in got["replies"][-1]["links"] if "/dl/" in u)
    assert download.startswith(f"http://127.0.0.1:{port}/dl/")
    assert await fetch(download) == (200, expected)


async def stop_node(node: Proc, secret: str) -> None:
    node.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        assert await node.proc.wait() == 0
    err = node.stderr.read_text()
    assert "Traceback" not in err
    assert secret not in err  # no bot token in the log


async def test_run_on_the_wire_serves_a_link_made_by_sending_a_file(
    tmp_path: Path, start_streambot: Start
) -> None:
    """A user sends a file through POST /messages; the bot's reply carries a link `run` serves exactly.

    A second `run` with a bot of its own (POST /bots) shares the simulator and does the same.
    """
    sim, info = await start_simulator(start_streambot, tmp_path, "--workers", "1")
    info_file = str(tmp_path / "sim" / "info.json")
    port = free_port()
    node = await start_streambot(
        "--env-file", str(run_env(tmp_path, info, "a", port)), "run", "--telegram", info_file
    )
    await node.wait_stderr("serving on")

    payload = tmp_path / "movie one.mp4"
    payload.write_bytes(os.urandom(3 * (1 << 20) + 4321))  # crosses 1 MiB edges
    await send_file_and_fetch_link(info, str(payload), payload.read_bytes(), user=424242, port=port)
    sessions = tmp_path / "a" / "data" / "sessions"
    assert sorted(p.suffix for p in sessions.iterdir()).count(".session") >= 2  # main + worker

    status, own = await call("POST", info.control_url + "/bots", {})
    assert status == 201
    port_b = free_port()
    env_b = run_env(tmp_path, info, "b", port_b, bot_token=own["token"])
    node_b = await start_streambot("--env-file", str(env_b), "run", "--telegram", info_file)
    await node_b.wait_stderr("serving on")
    await send_file_and_fetch_link(
        info, str(payload), payload.read_bytes(), user=515151, port=port_b, bot=own["bot"]
    )

    status, stats = await call("GET", info.control_url + "/stats")
    assert status == 200
    by_bot = stats["requests"]["by_bot"]
    assert by_bot[str(own["bot"])].get("upload.GetFile", 0) >= 4  # node b fetched with its bot
    assert by_bot[str(own["bot"])]["channels.GetMessages"] >= 1  # it resolved the file itself
    await stop_node(node, info.bot_token)
    await stop_node(node_b, own["token"])
    code, _ = await sim.stop()
    assert code == 0


async def test_run_with_a_bad_info_file_says_so_and_exits_2(
    tmp_path: Path, start_streambot: Start
) -> None:
    bad = tmp_path / "info.json"
    bad.write_text('{"dcs": {"2": "127.0.0.1:1"}}')
    env = tmp_path / "x.env"
    env.write_text(
        "API_ID=1\nAPI_HASH=" + "0" * 32 + "\nBOT_TOKEN=123456:" + "A" * 30 + "\n"
        "BIN_CHANNEL=-1001234567890\nBASE_URL=http://127.0.0.1:9\n"
    )
    node = await start_streambot("--env-file", str(env), "run", "--telegram", str(bad))
    async with asyncio.timeout(STARTUP_DEADLINE):
        assert await node.proc.wait() == 2
    err = node.stderr.read_text()
    assert "--telegram:" in err
    assert "control_url is missing" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------------- demo --telegram wire


async def test_demo_on_the_wire_serves_its_links_byte_exact(
    tmp_path: Path, start_streambot: Start
) -> None:
    """Same links JSON as in-process; bytes exact across 1 MiB edges; chat via the control API."""
    links = tmp_path / "links.json"
    info_out = tmp_path / "sim-info.json"
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"over the wire\n")
    port = free_port()
    demo = await start_streambot(
        "demo",
        "--telegram",
        "wire",
        "--port",
        str(port),
        "--links-out",
        str(links),
        "--telegram-info-out",
        str(info_out),
        "--synthetic",
        "3MiB:three.bin",
        str(notes),
    )
    await wait_for_file(links, STARTUP_DEADLINE)
    entries = json.loads(links.read_text())
    assert [(e["name"], e["size"]) for e in entries] == [
        ("notes.txt", notes.stat().st_size),
        ("three.bin", 3 << 20),
    ]
    for e in entries:
        assert set(e) == {"path", "name", "size", "download_url", "watch_url"}
    info = SimulatorInfo.load(info_out)
    assert await fetch(entries[0]["download_url"]) == (200, notes.read_bytes())
    seed = SyntheticFile.parse("3MiB:three.bin").seed
    status, body = await fetch(entries[1]["download_url"])
    assert (status, body == synthetic_bytes(seed, 0, 3 << 20)) == (200, True)

    await demo.read_until("/send PATH")
    assert demo.proc.stdin is not None
    demo.proc.stdin.write(b"/help\n")
    await demo.proc.stdin.drain()
    await demo.read_until("Commands:", deadline=30)
    demo.proc.stdin.write(f"/send {notes}\n".encode())
    await demo.proc.stdin.drain()
    sent = (await demo.read_until("Download: ", deadline=30)).split("Download: ", 1)[1].strip()
    assert await fetch(sent) == (200, notes.read_bytes())

    status, stats = await call("GET", info.control_url + "/stats")
    assert stats["requests"]["by_method"]["upload.GetFile"] >= 3

    code, rest = await demo.stop(signal.SIGTERM)
    assert code == 0
    assert "StreamBot demo stopped." in rest
    assert "Traceback" not in demo.stderr.read_text()
    with pytest.raises(ProcessLookupError):  # the simulator child stopped with the demo
        os.kill(info.pid, 0)


async def test_a_killed_wire_demo_takes_its_simulator_with_it(
    tmp_path: Path, start_streambot: Start
) -> None:
    """SIGKILL gives the demo no chance to stop its child: the simulator notices on its own."""
    links = tmp_path / "links.json"
    info_out = tmp_path / "sim-info.json"
    demo = await start_streambot(
        "demo",
        "--telegram",
        "wire",
        "--port",
        str(free_port()),
        "--links-out",
        str(links),
        "--telegram-info-out",
        str(info_out),
        "--synthetic",
        "4096:tiny.bin",
    )
    await wait_for_file(links, STARTUP_DEADLINE)
    info = SimulatorInfo.load(info_out)
    status, _ = await call("GET", info.control_url + "/stats")
    assert status == 200
    code, _ = await demo.stop(signal.SIGKILL)
    assert code == -signal.SIGKILL

    def gone() -> bool:  # reaped, or a zombie waiting for whoever inherited it
        try:
            return psutil.Process(info.pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    await eventually(gone, timeout=20)


async def test_simulator_stops_on_sigterm_while_a_long_poll_waits(
    tmp_path: Path, start_streambot: Start
) -> None:
    """A GET /replies long poll still waiting (up to 60 s) does not hold the simulator past
    SIGTERM: `demo --telegram wire` keeps one open, and used to wait out its 10 s kill deadline."""
    sim, info = await start_simulator(start_streambot, tmp_path, "--workers", "0")
    host, port = info.control_url.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"GET /replies?user_id={info.admin_id}&count=1&wait=60 HTTP/1.1\r\n"
        f"Host: {host}\r\nConnection: close\r\n\r\n".encode()
    )
    await writer.drain()
    # A request on a second connection, answered: the poll, sent first, is being handled.
    status, _ = await call("GET", info.control_url + "/")
    assert status == 200
    code, rest = await sim.stop(signal.SIGTERM, deadline=20.0)
    writer.close()
    assert code == 0
    assert "StreamBot simulator stopped." in rest
