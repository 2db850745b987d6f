"""``python -m streambot demo`` as a user runs it: a subprocess serving files, chatting on stdin, stopping on signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from streambot.demo import SAMPLE_FILES
from streambot.simulator.content import synthetic_bytes

from .helpers import STARTUP_DEADLINE, cli_env, fetch, free_port, wait_for_file


class Demo:
    """A running demo subprocess with helpers that wait on its output (never on the clock)."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr: Path) -> None:
        self.proc = proc
        self.stderr = stderr
        self.lines: list[str] = []

    async def read_until(self, predicate: str, deadline: float = 20.0) -> list[str]:
        """Read stdout lines until one contains ``predicate``; returns the lines read so far."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(deadline):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(
                        f"demo ended before {predicate!r}: {self.lines} {self.stderr.read_text()}"
                    )
                line = raw.decode().rstrip("\n")
                self.lines.append(line)
                if predicate in line:
                    return self.lines

    async def say(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()

    async def stop(self, sig: signal.Signals) -> tuple[int, str]:
        """Send ``sig``; return the exit status and the rest of stdout."""
        self.proc.send_signal(sig)
        assert self.proc.stdout is not None
        async with asyncio.timeout(15):
            rest = await self.proc.stdout.read()
            status = await self.proc.wait()
        return status, rest.decode()


@pytest.fixture
async def start_demo(tmp_path: Path) -> AsyncIterator[object]:
    procs: list[asyncio.subprocess.Process] = []

    async def start(*args: str) -> Demo:
        stderr = tmp_path / f"demo{len(procs)}.stderr"
        with stderr.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "streambot",
                "demo",
                *args,
                cwd=tmp_path,
                env=cli_env(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
            )
        procs.append(proc)
        return Demo(proc, stderr)

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_demo_serves_files_chats_and_stops_on_sigterm(tmp_path: Path, start_demo) -> None:
    """Two files: links JSON, a line each, exact bytes, /help and /send on stdin, EOF, SIGTERM exits 0."""
    files = [tmp_path / "clip one.mp4", tmp_path / "notes.txt"]
    files[0].write_bytes(os.urandom(3 * 1024 * 1024 + 123))
    files[1].write_bytes(b"hello, demo\n")
    links = tmp_path / "out" / "links.json"
    links.parent.mkdir()
    port = free_port()
    demo = await start_demo("--port", str(port), "--links-out", str(links), *map(str, files))

    await wait_for_file(links, STARTUP_DEADLINE)
    entries = json.loads(links.read_text())
    assert [e["path"] for e in entries] == [str(f.resolve()) for f in files]
    assert [e["name"] for e in entries] == ["clip one.mp4", "notes.txt"]
    assert [e["size"] for e in entries] == [f.stat().st_size for f in files]
    for e in entries:
        assert set(e) == {"path", "name", "size", "download_url", "watch_url"}
        assert e["download_url"].startswith(f"http://127.0.0.1:{port}/dl/")
        assert e["watch_url"].startswith(f"http://127.0.0.1:{port}/watch/")
    assert [p.name for p in links.parent.iterdir()] == ["links.json"]  # atomic: no temp left

    lines = await demo.read_until("/help")
    for e in entries:
        (line,) = [ln for ln in lines if e["download_url"] in ln]
        assert e["watch_url"] in line
        assert str(e["size"]) in line

    for e, f in zip(entries, files, strict=True):
        status, body = await fetch(e["download_url"])
        assert status == 200
        assert body == f.read_bytes()

    await demo.say("/help")
    await demo.read_until("Commands:")
    await demo.say(f"/send {files[1]}")  # the admin sends a file: the bot answers with links
    sent_link = (await demo.read_until("Download: "))[-1].split("Download: ", 1)[1].strip()
    assert await fetch(sent_link) == (200, files[1].read_bytes())

    assert demo.proc.stdin is not None
    demo.proc.stdin.close()  # end of input: the demo keeps serving
    await demo.proc.stdin.wait_closed()
    status, body = await fetch(entries[1]["download_url"])
    assert (status, body) == (200, files[1].read_bytes())
    assert demo.proc.returncode is None

    code, rest = await demo.stop(signal.SIGTERM)
    assert code == 0
    assert "StreamBot demo stopped." in rest
    assert "Traceback" not in demo.stderr.read_text()


async def test_demo_without_paths_serves_the_sample_set_and_stops_on_sigint(
    tmp_path: Path, start_demo
) -> None:
    """With no PATH the sample set is generated and served byte-exact; SIGINT exits 0."""
    links = tmp_path / "links.json"
    demo = await start_demo("--port", str(free_port()), "--links-out", str(links))
    await wait_for_file(links, STARTUP_DEADLINE)
    entries = json.loads(links.read_text())
    assert [(e["name"], e["size"], e["path"]) for e in entries] == [
        (name, size, None) for name, _, size in SAMPLE_FILES
    ]
    for seed, e in enumerate(entries, 1):
        status, body = await fetch(e["download_url"])
        assert status == 200
        assert body == synthetic_bytes(seed, 0, e["size"])
    code, rest = await demo.stop(signal.SIGINT)
    assert code == 0
    assert "StreamBot demo stopped." in rest
    assert "Traceback" not in demo.stderr.read_text()


async def test_demo_reports_a_busy_port_cleanly(tmp_path: Path, start_demo) -> None:
    """If the port is taken the demo says so in one line and exits 3, without a traceback."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        demo = await start_demo("--port", str(port))
        async with asyncio.timeout(STARTUP_DEADLINE):
            code = await demo.proc.wait()
    err = demo.stderr.read_text()
    assert code == 3
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "Traceback" not in err
