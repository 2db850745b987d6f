"""The proof of issue 15: three StreamBot processes on one PostgreSQL and one simulated Telegram.

One `python -m streambot simulator` process is Telegram (MTProto over loopback, control API); three
`run --telegram` processes are the nodes: one `NODE_ROLE=bot` with the simulator's main bot and a
worker, two `NODE_ROLE=web` with a worker bot each of their own (`POST /bots`). They share one
PostgreSQL schema and one LINK_SECRET. Users talk to the bot only through the control API, exactly as
they would talk to Telegram; downloads go over HTTP to each node. Every wait is on an event
(a process line, a reply long poll, a database row) with a deadline, never on the clock alone.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path

import aiohttp
import asyncpg

from streambot.pg_store import LISTENER_NAME
from streambot.simulator.wire.info import SimulatorInfo

from .helpers import Proc, Start, call, free_port, reply_from_bot, start_simulator
from .pg import fresh_schema

SECRET = "three-nodes-link-secret-0123456789abcdef"
OWNER, OTHER = 424242, 515151
FLUSH_SECONDS = 1.0
QUOTA_CACHE_SECONDS = 0.5
QUOTA_BYTES = 9_000_000  # USER_DAILY_LIMIT_GB=0.009: between 3 and 6 downloads of file A
A_SIZE = 2 * (1 << 20) + 4321  # crosses 1 MiB edges
K_SIZE = (1 << 20) + 999
B_SIZE = C_SIZE = 300_000


class Node:
    def __init__(self, name: str, proc: Proc, port: int) -> None:
        self.name, self.proc, self.port = name, proc, port

    def url(self, link: str) -> str:
        """The same link on this node (links carry the bot node's BASE_URL)."""
        path = link.split("/", 3)[3]
        return f"http://127.0.0.1:{self.port}/{path}"


class Ledger:
    """What the clients received, per file and per owner: the truth the database must match."""

    def __init__(self) -> None:
        self.files: Counter[int] = Counter()
        self.owners: Counter[int] = Counter()

    def add(self, message_id: int, owner: int, n: int) -> None:
        self.files[message_id] += n
        self.owners[owner] += n

    @property
    def total(self) -> int:
        return sum(self.files.values())


async def get(
    session: aiohttp.ClientSession, url: str, rng: str | None = None
) -> tuple[int, bytes]:
    """Status and the file bytes received (an error's explanation is not file bytes: b"")."""
    headers = {"Range": rng} if rng else {}
    async with session.get(url, headers=headers) as resp:
        body = await resp.read()
        return resp.status, body if resp.status in (200, 206) else b""


def node_env(
    tmp_path: Path, info: SimulatorInfo, name: str, port: int, base_port: int, db: str, **extra: str
) -> Path:
    env = tmp_path / f"{name}.env"
    values = {
        "API_ID": str(info.api_id),
        "API_HASH": info.api_hash,
        "BIN_CHANNEL": str(info.bin_channel),
        "BASE_URL": f"http://127.0.0.1:{base_port}",
        "PORT": str(port),
        "BIND_HOST": "127.0.0.1",
        "DATA_DIR": str(tmp_path / name / "data"),
        "LOG_DIR": str(tmp_path / name / "logs"),
        "LOG_LEVEL": "INFO",
        "DATABASE_URL": db,
        "LINK_SECRET": SECRET,
        "BANDWIDTH_FLUSH_SECONDS": str(FLUSH_SECONDS),
        "BANDWIDTH_QUOTA_CACHE_SECONDS": str(QUOTA_CACHE_SECONDS),
        # Long on purpose: a 410 within 100 ms can then only come from the pushed revocation.
        "CACHE_GUARD_TTL": "60",
        "USER_DAILY_LIMIT_GB": str(QUOTA_BYTES / 1e9),
        **extra,
    }
    env.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return env


async def send_file(info: SimulatorInfo, user: int, name: str, size: int) -> tuple[str, int]:
    reply = await reply_from_bot(info, user, {"file": {"size": str(size), "name": name}})
    link = next(u for u in reply["links"] if "/dl/" in u)
    return link, 0


async def test_three_nodes_share_links_revocations_quotas_and_counters(
    tmp_path: Path,
    start_streambot: Start,
) -> None:
    t_start = time.perf_counter()
    async with fresh_schema() as db:
        sim, info = await start_simulator(
            start_streambot, tmp_path, "--workers", "1", "--synthetic", "4096:seed.bin"
        )
        info_file = str(tmp_path / "sim" / "info.json")
        _, web1_bot = await call("POST", info.control_url + "/bots", {})
        _, web2_bot = await call("POST", info.control_url + "/bots", {})
        ports = [free_port() for _ in range(3)]
        envs = [
            node_env(
                tmp_path,
                info,
                "bot",
                ports[0],
                ports[0],
                db,
                NODE_ROLE="bot",
                BOT_TOKEN=info.bot_token,
                MULTI_TOKEN1=info.worker_tokens[0],
            ),
            node_env(
                tmp_path,
                info,
                "web1",
                ports[1],
                ports[0],
                db,
                NODE_ROLE="web",
                BOT_TOKEN=info.bot_token,  # present, as in a shared env file, and never used
                MULTI_TOKEN1=web1_bot["token"],
            ),
            node_env(
                tmp_path,
                info,
                "web2",
                ports[2],
                ports[0],
                db,
                NODE_ROLE="web",
                BOT_TOKEN=info.bot_token,
                MULTI_TOKEN1=web2_bot["token"],
            ),
        ]
        # All three start together on the empty schema: the migration lock makes that safe.
        procs = [
            await start_streambot("--env-file", str(e), "run", "--telegram", info_file)
            for e in envs
        ]
        nodes = [
            Node(n, p, port)
            for n, p, port in zip(("bot", "web1", "web2"), procs, ports, strict=True)
        ]
        await asyncio.gather(*(n.proc.wait_stderr("serving on") for n in nodes))
        t_ready = time.perf_counter() - t_start

        admin = await asyncpg.connect(db)
        ledger = Ledger()
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            # 1. A file sent to the bot through the simulator: its link works on every node.
            link_a, _ = await send_file(info, OWNER, "a.bin", A_SIZE)
            link_k, _ = await send_file(info, OTHER, "k.bin", K_SIZE)
            msg_a = await message_of(admin, "a.bin")
            msg_k = await message_of(admin, "k.bin")
            bodies = {}
            for node in nodes:
                for link, msg, owner in ((link_a, msg_a, OWNER), (link_k, msg_k, OTHER)):
                    status, body = await get(http, node.url(link))
                    assert status == 200, (node.name, status)
                    ledger.add(msg, owner, len(body))
                    bodies[(node.name, msg)] = body
            for msg, size in ((msg_a, A_SIZE), (msg_k, K_SIZE)):
                seen = {bodies[(n.name, msg)] for n in nodes}
                assert len(seen) == 1, "nodes served different bytes"
                assert len(seen.pop()) == size

            # 2. /revoke on the bot: 410 on every node within 100 ms of the revocation's commit.
            link_b, _ = await send_file(info, OWNER, "b.bin", B_SIZE)
            msg_b = await message_of(admin, "b.bin")
            for node in nodes:  # each node now trusts "b.bin is fine" for CACHE_GUARD_TTL (60 s)
                status, body = await get(http, node.url(link_b), "bytes=0-0")
                assert status == 206
                ledger.add(msg_b, OWNER, len(body))
            revoke_latency = await revoke_and_watch(info, admin, http, nodes, link_b, msg_b, ledger)
            assert all(admitted < 0.1 for admitted, _ in revoke_latency.values()), revoke_latency

            # 2b. web1's listening connection dies: the revocation it missed is replayed on
            # reconnect (long before the 60 s TTL would have let it through).
            link_c, _ = await send_file(info, OWNER, "c.bin", C_SIZE)
            msg_c = await message_of(admin, "c.bin")
            status, body = await get(http, nodes[1].url(link_c), "bytes=0-0")
            assert status == 206
            ledger.add(msg_c, OWNER, len(body))
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = $1",
                f"{LISTENER_NAME} {nodes[1].proc.proc.pid}",
            )
            assert killed == 1
            replay = await revoke_and_watch(info, admin, http, nodes[1:2], link_c, msg_c, ledger)
            assert replay["web1"][0] < 10.0, replay  # the replay, not the 60 s TTL

            # 3. The owner's daily quota, reached across nodes, is a 429 on every node.
            for node in nodes:
                status, body = await get(http, node.url(link_a))
                assert status in (200, 429)
                ledger.add(msg_a, OWNER, len(body))
            assert ledger.owners[OWNER] >= QUOTA_BYTES
            t = time.perf_counter()
            refused: dict[str, float] = {}
            while len(refused) < 3:
                assert time.perf_counter() - t < 10, (
                    f"still admitted on { {n.name for n in nodes} - set(refused) }"
                )
                for node in nodes:
                    if node.name not in refused:
                        status, body = await get(http, node.url(link_a), "bytes=0-0")
                        ledger.add(msg_a, OWNER, len(body))
                        if status == 429:
                            refused[node.name] = time.perf_counter() - t
                await asyncio.sleep(0.05)
            # Another owner is not affected.
            status, body = await get(http, nodes[0].url(link_k), "bytes=0-99")
            assert status == 206
            ledger.add(msg_k, OTHER, len(body))

            # 4. kill -9 of web2 right after it served K: it loses at most its last interval.
            await wait_until_flushed(admin, ledger.total)
            status, body = await get(http, nodes[2].url(link_k))
            assert status == 200
            last = len(body)
            ledger.add(msg_k, OTHER, last)
            nodes[2].proc.proc.send_signal(signal.SIGKILL)
            assert await nodes[2].proc.proc.wait() == -signal.SIGKILL

        # 5. The others stop cleanly (flushing); then the database must match the clients.
        for node in nodes[:2]:
            node.proc.proc.send_signal(signal.SIGTERM)
        for node in nodes[:2]:
            async with asyncio.timeout(30):
                assert await node.proc.proc.wait() == 0, node.proc.stderr.read_text()
        db_files = {int(k): v for k, v in await sums(admin, "file")}
        db_owners = {int(k): v for k, v in await sums(admin, "owner")}
        db_total = dict(await sums(admin, "global")).get("", 0)
        lost = ledger.total - db_total
        assert 0 <= lost <= last, (lost, last)  # nothing double-counted, at most web2's last flush
        expected_files = dict(ledger.files)
        expected_files[msg_k] -= lost
        assert db_files == {m: n for m, n in expected_files.items() if n}
        expected_owners = dict(ledger.owners)
        expected_owners[OTHER] -= lost
        assert db_owners == {o: n for o, n in expected_owners.items() if n}

        # 6. Web nodes never used BOT_TOKEN, though their config has it (one shared env file):
        # one login per bot in use (the main bot once: the bot node), the web nodes streamed with
        # their own bots, and their session folders hold only those bots' sessions.
        status, stats = await call("GET", info.control_url + "/stats")
        requests = stats["requests"]
        assert requests["by_method"]["auth.ImportBotAuthorization"] == 4  # main, worker1, 2 web
        for node, bot in ((nodes[1], web1_bot), (nodes[2], web2_bot)):
            assert requests["by_bot"][str(bot["bot"])].get("upload.GetFile", 0) > 0
            folder = tmp_path / node.name / "data" / "sessions"
            sessions = {  # a session file, its -journal, and not the folder's .lock
                p.name.split(".session")[0] for p in folder.iterdir() if ".session" in p.name
            }
            assert sessions == {f"worker-{bot['bot']}"}, sessions
        for node in nodes:
            err = node.proc.stderr.read_text()
            assert "Traceback" not in err
            assert info.bot_token not in err
        await admin.close()
        sim.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await sim.proc.wait() == 0
    wall = time.perf_counter() - t_start
    print(
        f"\nthree nodes: ready {t_ready:.2f}s; revoke->410 (NOTIFY) "
        + ", ".join(f"{k} {a * 1000:.0f}-{r * 1000:.0f} ms" for k, (a, r) in revoke_latency.items())
        + f"; after a listener drop (replay) {replay['web1'][1] * 1000:.0f} ms; quota 429 after "
        + ", ".join(f"{k} {v:.2f}s" for k, v in refused.items())
        + f"; kill -9 lost {lost} of last {last} bytes; total {db_total} bytes; wall {wall:.1f}s"
    )


async def message_of(admin: asyncpg.Connection, name: str) -> int:
    """The storage message the bot recorded for ``name`` (it records before it replies)."""
    return int(await admin.fetchval("SELECT message_id FROM files WHERE name = $1", name))


async def revoke_and_watch(
    info: SimulatorInfo,
    admin: asyncpg.Connection,
    http: aiohttp.ClientSession,
    nodes: list[Node],
    link: str,
    message_id: int,
    ledger: Ledger,
) -> dict[str, tuple[float, float]]:
    """Send /revoke LINK while polling every node until 410; per node, seconds after the commit:
    (when the last request that was still admitted had been sent, when the first 410 arrived).

    Every request sent after the first figure got 410, so that figure below 0.1 is exactly "410
    on this node within 100 ms"; the second is the conservative latency (it includes a request's
    round trip). The commit time is the row's revoked_at, stamped by the bot node's clock (this
    host's clock).
    """
    watching = asyncio.Event()
    admitted: dict[str, float] = {}
    refused: dict[str, float] = {}

    async def watch(node: Node) -> None:
        while True:
            watching.set()
            sent = time.time()
            status, body = await get(http, node.url(link), "bytes=0-0")
            if status == 410:
                refused[node.name] = time.time()
                return
            assert status == 206, status
            admitted[node.name] = sent
            ledger.add(message_id, OWNER, len(body))
            await asyncio.sleep(0.002)  # yield between polls; resolution is one request

    async with asyncio.timeout(30):
        watchers = [asyncio.create_task(watch(n)) for n in nodes]
        await watching.wait()
        reply = await reply_from_bot(info, OWNER, {"text": f"/revoke {link}"})
        assert "revoked" in reply["text"]
        await asyncio.gather(*watchers)
    revoked_at = await admin.fetchval(
        "SELECT revoked_at FROM revocations WHERE message_id = $1", message_id
    )
    return {
        n.name: (admitted.get(n.name, revoked_at) - revoked_at, refused[n.name] - revoked_at)
        for n in nodes
    }


async def wait_until_flushed(admin: asyncpg.Connection, total: int) -> None:
    """Until every node has flushed what it served so far (the global row equals the clients')."""
    async with asyncio.timeout(10 * FLUSH_SECONDS + 10):
        # Polled: the state lives in other processes' flushes, which announce nothing.
        while dict(await sums(admin, "global")).get("", 0) != total:  # noqa: ASYNC110
            await asyncio.sleep(FLUSH_SECONDS / 10)


async def sums(admin: asyncpg.Connection, scope: str) -> list[tuple[str, int]]:
    rows = await admin.fetch(
        "SELECT key, SUM(bytes)::bigint AS n FROM bandwidth WHERE scope = $1 GROUP BY key", scope
    )
    return [(r["key"], int(r["n"])) for r in rows]
