"""A big fleet stays cheap: what an idle worker bot costs, and a restart that skips the login stagger.

Over the wire: a `python -m streambot simulator` process is Telegram and `run --telegram` processes
are StreamBot, measured from outside (psutil on the process: threads, file descriptors). A worker
bot never handles updates, so all it may hold while idle is its main connection: one socket, the
one decrypt thread kurigram gives every TCP connection, and its session file. Media connections
open only when a stream needs them.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import psutil
import pytest

from streambot.fleet import session_logged_in
from streambot.simulator.wire.info import SimulatorInfo

from .helpers import Proc, Start, call, free_port, start_simulator

WORKERS = 6
# Per idle worker bot (measured: 1 thread and 3 descriptors: its socket, its session file and the
# session's SQLite journal/WAL handle). An eager media pool would add 4 of each per DC.
THREADS_PER_WORKER = 1
FDS_PER_WORKER = 3
# Pools the whole process shares grow on demand (asyncio's default executor gets a thread when a
# call finds none idle), so one start-up may hold a thread or two more than another.
SHARED_THREADS = 2
# Far longer than any test may wait: a restart that paused before each worker would take 1 hour.
LONG_STAGGER = 600


def node_env(
    tmp_path: Path, info: SimulatorInfo, name: str, data: str, workers: int, stagger: float
) -> Path:
    port = free_port()
    values = {
        "API_ID": str(info.api_id),
        "API_HASH": info.api_hash,
        "BOT_TOKEN": info.bot_token,
        "BIN_CHANNEL": str(info.bin_channel),
        "BASE_URL": f"http://127.0.0.1:{port}",
        "PORT": str(port),
        "DATA_DIR": str(tmp_path / data),
        "LOG_DIR": str(tmp_path / name / "logs"),
        "LOG_LEVEL": "INFO",
        "LOGIN_STAGGER_SECONDS": str(stagger),
        **{f"MULTI_TOKEN{i}": t for i, t in enumerate(info.worker_tokens[:workers], 1)},
    }
    env = tmp_path / f"{name}.env"
    env.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return env


async def logins(info: SimulatorInfo) -> int:
    status, stats = await call("GET", info.control_url + "/stats")
    assert status == 200
    return int(stats["requests"]["by_method"].get("auth.ImportBotAuthorization", 0))


async def run_idle(start: Start, env: Path, info_file: str) -> tuple[int, int, int]:
    """Start a node, wait until it serves, read its threads and descriptors, stop it cleanly."""
    node: Proc = await start("--env-file", str(env), "run", "--telegram", info_file)
    await node.wait_stderr("serving on")
    proc = psutil.Process(node.proc.pid)
    threads, fds = proc.num_threads(), proc.num_fds()
    conns = len(proc.net_connections(kind="tcp"))
    node.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        assert await node.proc.wait() == 0, node.stderr.read_text()
    assert "Traceback" not in node.stderr.read_text()
    return threads, fds, conns


async def test_idle_worker_bots_cost_one_thread_and_three_descriptors_and_a_restart_skips_the_stagger(
    tmp_path: Path, start_streambot: Start
) -> None:
    sim, info = await start_simulator(start_streambot, tmp_path, "--workers", str(WORKERS))
    info_file = str(tmp_path / "sim" / "info.json")

    alone = await run_idle(
        start_streambot, node_env(tmp_path, info, "alone", "alone-data", 0, 0), info_file
    )
    before = await logins(info)
    fleet = await run_idle(
        start_streambot, node_env(tmp_path, info, "fresh", "fleet-data", WORKERS, 0), info_file
    )
    assert await logins(info) - before == WORKERS + 1  # fresh: every bot logs in

    threads, fds, conns = (b - a for a, b in zip(alone, fleet, strict=True))
    assert conns == WORKERS  # one main connection per worker, no media connection yet
    assert threads <= WORKERS * THREADS_PER_WORKER + SHARED_THREADS, (alone, fleet)
    assert fds <= WORKERS * FDS_PER_WORKER, (alone, fleet)

    # The same fleet again from its saved sessions, with a stagger it must not wait: it serves
    # within the start-up deadline (60 s, against 6 x 600 s) and logs in no bot again.
    before = await logins(info)
    restart = await run_idle(
        start_streambot,
        node_env(tmp_path, info, "restart", "fleet-data", WORKERS, LONG_STAGGER),
        info_file,
    )
    assert await logins(info) == before
    assert restart[2] == fleet[2]

    code, _ = await sim.stop()
    assert code == 0


def _session_file(path: Path, auth_key: bytes | None, user_id: int | None) -> Path:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE sessions (dc_id INTEGER, auth_key BLOB, user_id INTEGER)")
        db.execute("INSERT INTO sessions VALUES (2, ?, ?)", (auth_key, user_id))
    return path


@pytest.mark.parametrize(
    ("make", "logged_in"),
    [
        (lambda p: p, False),  # no file
        (lambda p: (p.write_bytes(b"not a database at all"), p)[1], False),
        (lambda p: _session_file(p, b"k" * 256, None), False),  # key exchanged, login unfinished
        (lambda p: _session_file(p, None, 42), False),
        (lambda p: _session_file(p, b"k" * 256, 42), True),
    ],
)
def test_a_saved_login_needs_an_auth_key_and_a_user(tmp_path: Path, make, logged_in) -> None:
    path = make(tmp_path / "worker-1.session")
    assert session_logged_in(path) is logged_in
