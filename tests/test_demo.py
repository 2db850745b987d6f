"""``python -m streambot demo`` as a user runs it: a subprocess serving files, chatting on stdin, stopping on signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from pathlib import Path

import pytest

from streambot.demo import SAMPLE_FILES, SyntheticFile
from streambot.simulator.content import synthetic_bytes
from streambot.simulator.samples import SAMPLE_VIDEO

from .helpers import STARTUP_DEADLINE, fetch, free_port, wait_for_file


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
    """With no PATH the sample set is served byte-exact (the real video first); SIGINT exits 0."""
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
        if seed == 1:
            assert body == SAMPLE_VIDEO.read_bytes()
            assert body[:4] == b"\x1a\x45\xdf\xa3"  # an EBML (WebM) header, not random bytes
        else:
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


@pytest.mark.parametrize("telegram", ["inproc", "wire"])
async def test_demo_file_dc_serves_files_from_a_foreign_dc(
    tmp_path: Path, start_demo, telegram: str
) -> None:
    """`--file-dc 4` puts the files on DC 4 while the bots live on DC 2, in both modes; the
    simulator answers FILE_MIGRATE at home, so exact bytes mean the foreign-DC path served them.
    On the wire the simulator shows the file on DC 4 and the authorization exported at home and
    imported on DC 4."""
    links = tmp_path / "links.json"
    info = tmp_path / "sim.json"
    spec = SyntheticFile.parse("3MiB:far.bin")
    extra = ["--telegram-info-out", str(info)] if telegram == "wire" else []
    demo = await start_demo(
        "--port", str(free_port()), "--links-out", str(links), "--telegram", telegram,
        "--file-dc", "4", "--synthetic", "3MiB:far.bin", *extra,
    )  # fmt: skip
    await wait_for_file(links, STARTUP_DEADLINE)
    (entry,) = json.loads(links.read_text())
    status, body = await fetch(entry["download_url"])
    assert (status, body) == (200, synthetic_bytes(spec.seed, 0, spec.size))
    if telegram == "wire":
        sim = json.loads(info.read_text())
        assert [(f["name"], f["dc"]) for f in sim["files"]] == [("far.bin", 4)]
        status, stats = await fetch(sim["control_url"] + "/stats")
        by_method = json.loads(stats)["requests"]["by_method"]
        assert by_method["auth.ExportAuthorization"] >= 1
        assert by_method["auth.ImportAuthorization"] == by_method["auth.ExportAuthorization"]
    code, _rest = await demo.stop(signal.SIGTERM)
    assert code == 0
    assert "Traceback" not in demo.stderr.read_text()


async def test_demo_rejects_a_file_dc_outside_1_to_5(tmp_path: Path, start_demo) -> None:
    """A DC Telegram does not have is a usage error naming the option (exit 2), not a traceback."""
    demo = await start_demo("--port", str(free_port()), "--file-dc", "9")
    async with asyncio.timeout(STARTUP_DEADLINE):
        code = await demo.proc.wait()
    err = demo.stderr.read_text()
    assert code == 2
    assert "--file-dc" in err
    assert "Traceback" not in err
