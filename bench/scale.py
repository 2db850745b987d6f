"""Scale over the wire: more bots, more processes, a big fleet (``python -m bench --only scale``).

Telegram is one ``python -m streambot simulator`` process; StreamBot runs as ordinary
``python -m streambot run --telegram INFO`` processes (config in the environment, sessions in their
own ``DATA_DIR``), exactly as an operator runs it. Every link comes from the bot itself: a user
sends it the file through the control API (``POST /messages``) and the link is read from its reply.

* **Bots and connections**: one process with 1, 2 and 4 bots (the main bot plus workers), and the
  same with ``MEDIA_CONNECTIONS=1``, under enough concurrent 8 MiB ranges to saturate the machine.
  kurigram decrypts on one thread per TCP connection (TgCrypto releases the GIL) while TCP reads,
  framing and TL parsing run on the one event loop; comparing 1 bot x 4 connections with 4 bots x 1
  connection says which of the two spreads the work over cores.
* **Processes**: two processes on one port (``REUSE_PORT=true``) and one SQLite file
  (``DATABASE_PATH``), one ``NODE_ROLE=bot`` and one ``web``, each with its own bots and
  ``DATA_DIR``, against one process with the same bots in total.
* **Fleet**: one process with 0 and with N worker bots: start-up time (fresh logins without the
  stagger, then a restart from the saved sessions with the default stagger, which a restart skips),
  and RSS, threads and file descriptors per idle worker bot.

CPU figures are read from /proc (psutil) by a sampling thread and cut to the load generator's own
measurement window, so the ramp-up and the shutdown are not billed. Nothing here asserts a figure.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import psutil

from bench import scenarios
from bench.procs import (
    SERVER_SETTINGS,
    BenchError,
    Sampler,
    Server,
    free_port,
    python_env,
    streambot_command,
)

MIB = 1 << 20
GIB = 1 << 30
SECRET = "bench-scale-link-secret-0123456789abcdef"
USER = 424242
FILE_NAME = "big.bin"


@dataclass(frozen=True, slots=True)
class ScalePlan:
    """What the scale section runs; ``QUICK_SCALE`` is the same on small inputs."""

    # (bots in the process, MEDIA_CONNECTIONS): 1 bot x 4 connections against 4 bots x 1
    # connection tells whether bots or connections spread the work over cores.
    bot_configs: tuple[tuple[int, int], ...] = ((1, 4), (2, 4), (4, 4), (1, 1), (4, 1))
    processes: bool = True  # the most bots above in 2 processes against 1
    streams: int = 12
    rtt_ms: float = 20
    range_bytes: int = 8 * MIB
    seconds: float = 8.0
    file_bytes: int = 1 << 30
    fleet_workers: int = 50


FULL_SCALE = ScalePlan()
QUICK_SCALE = ScalePlan(
    bot_configs=((1, 4), (2, 4)),
    streams=4,
    range_bytes=2 * MIB,
    seconds=1.0,
    file_bytes=256 * MIB,
    fleet_workers=3,
)


# ---------------------------------------------------------------------- processes
def _http(method: str, url: str, body: Any = None, timeout: float = 60.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


class Telegram:
    """The simulator process: MTProto on loopback, the control API, its own CPU."""

    def __init__(self, workdir: Path, *, rtt_ms: float, workers: int) -> None:
        self.dir = workdir / "telegram"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.info_path = self.dir / "info.json"
        cmd = [
            sys.executable,
            "-m",
            "streambot",
            "simulator",
            "--info-out",
            str(self.info_path),
            "--rtt-ms",
            str(rtt_ms),
            "--workers",
            str(workers),
            "--synthetic",
            "4096:seed.bin",
        ]
        self.server = Server(
            "simulator", cmd, env=python_env(), cwd=self.dir, ready=self.info_path.exists
        )
        self.info: dict[str, Any] = {}

    def start(self) -> None:
        self.server.start()
        self.info = json.loads(self.info_path.read_text())

    def stop(self) -> None:
        self.server.stop()

    @property
    def control(self) -> str:
        return str(self.info["control_url"])

    def requests(self, method: str) -> int:
        stats = _http("GET", self.control + "/stats")
        return int(stats["requests"]["by_method"].get(method, 0))

    def link(self, size: int, name: str = FILE_NAME) -> str:
        """A user sends the main bot a file of ``size``; the download link from its reply."""
        seen = len(_http("GET", f"{self.control}/replies?user_id={USER}&count=0&wait=0")["replies"])
        _http(
            "POST",
            self.control + "/messages",
            {"user_id": USER, "file": {"size": str(size), "name": name}},
        )
        got = _http("GET", f"{self.control}/replies?user_id={USER}&count={seen + 1}&wait=30")
        replies = got["replies"]
        if len(replies) <= seen:
            raise BenchError("the bot did not answer with a link")
        for url in replies[-1]["links"]:
            if "/dl/" in url:
                return str(url)
        raise BenchError(f"no download link in the bot's reply: {replies[-1]}")


def _listening(pid: int, port: int) -> bool:
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns)


class Node:
    """One ``python -m streambot run --telegram INFO`` process, ready once it listens on its port.

    Readiness is read from /proc (a listening socket of this very process), because with
    REUSE_PORT a request to the port may reach the other process.
    """

    def __init__(
        self,
        name: str,
        workdir: Path,
        telegram: Telegram,
        *,
        port: int,
        bot_token: str,
        worker_tokens: Sequence[str],
        settings: Mapping[str, str],
        data_dir: Path | None = None,
    ) -> None:
        run_dir = workdir / name
        run_dir.mkdir(parents=True, exist_ok=True)
        info = telegram.info
        values = {
            "API_ID": str(info["api_id"]),
            "API_HASH": info["api_hash"],
            "BIN_CHANNEL": str(info["bin_channel"]),
            "BASE_URL": f"http://127.0.0.1:{port}",
            "BIND_HOST": "127.0.0.1",
            "PORT": str(port),
            "DATA_DIR": str(data_dir or run_dir / "data"),
            **SERVER_SETTINGS,
            "LOG_DIR": str(run_dir / "logs"),
            "LINK_SECRET": SECRET,
            **({"BOT_TOKEN": bot_token} if bot_token else {}),
            **{f"MULTI_TOKEN{i}": t for i, t in enumerate(worker_tokens, 1)},
            **settings,
        }
        cmd = streambot_command(run_dir, "run", "--telegram", str(telegram.info_path))
        self.port = port
        self.server: Server = Server(
            name,
            cmd,
            env=python_env(values),
            cwd=run_dir,
            ready=lambda: _listening(self.server.process.pid, port),
            start_timeout=300,
        )

    def resources(self) -> dict[str, float]:
        p = self.server.process
        return {
            "rss_mib": round(p.memory_info().rss / MIB, 1),
            "threads": p.num_threads(),
            "fds": p.num_fds(),
        }


@contextlib.contextmanager
def running(nodes: Sequence[Node]) -> Iterator[None]:
    try:
        for n in nodes:
            n.server.launch()
        for n in nodes:
            n.server.wait_ready()
        yield
    finally:
        for n in nodes:
            n.server.stop()


# ---------------------------------------------------------------------- measuring
class CpuSampler(Sampler):
    """CPU seconds of several processes sampled in a thread, read back for any time window."""

    def __init__(self, servers: Sequence[Server], interval: float = 0.05) -> None:
        super().__init__("cpu-sampler", interval)
        self._servers = list(servers)
        self.times: list[float] = []
        self.samples: list[list[float]] = []

    def sample(self) -> bool:
        # Per process: all its threads, then its main thread alone (the event loop's thread).
        row: list[float] = []
        for s in self._servers:
            try:
                proc = s.process
                main = next((t for t in proc.threads() if t.id == proc.pid), None)
                row.append(s.cpu_seconds())
                row.append(main.user_time + main.system_time if main else 0.0)
            except (psutil.Error, OSError, BenchError):
                k = len(row)
                row += self.samples[-1][k : k + 2] if self.samples else [0.0, 0.0]
        self.times.append(time.time())
        self.samples.append(row)
        return True  # a process that is gone keeps its last figures

    @contextlib.contextmanager
    def running(self) -> Iterator[Self]:
        # Samples at both edges, so every time in the window interpolates between two.
        self.sample()
        try:
            with super().running():
                yield self
        finally:
            self.sample()

    def at(self, t: float) -> list[float]:
        """Each process's CPU seconds at time ``t``, interpolated between samples."""
        i = bisect.bisect_left(self.times, t)
        if i <= 0:
            return list(self.samples[0])
        if i >= len(self.times):
            return list(self.samples[-1])
        t0, t1 = self.times[i - 1], self.times[i]
        w = (t - t0) / (t1 - t0) if t1 > t0 else 1.0
        return [a + (b - a) * w for a, b in zip(self.samples[i - 1], self.samples[i], strict=True)]


def _thread_times(server: Server) -> dict[int, float]:
    return {t.id: t.user_time + t.system_time for t in server.process.threads()}


def _busy_threads(server: Server, before: dict[int, float], wall: float) -> tuple[int, float]:
    """Threads other than the main one that used over 1% of a core since ``before``, and the
    busiest one's share."""
    pid = server.process.pid
    shares = [
        (cpu - before.get(tid, 0.0)) / wall
        for tid, cpu in _thread_times(server).items()
        if tid != pid and wall > 0
    ]
    busy = [x for x in shares if x > 0.01]
    return len(busy), round(max(shares, default=0.0), 2)


def saturate(
    url: str, nodes: Sequence[Node], telegram: Telegram, plan: ScalePlan
) -> dict[str, Any]:
    """``plan.streams`` viewers on ``url``; throughput and CPU of each StreamBot and of Telegram.

    The CPU figures cover exactly the load generator's measurement window (every stream running).
    """
    servers = [n.server for n in nodes] + [telegram.server]
    ramp = max(0.2, plan.streams / 200)
    waited0 = [n.server.cpu_wait_seconds() for n in nodes]
    threads0 = [_thread_times(n.server) for n in nodes]
    t_threads = time.monotonic()
    with CpuSampler(servers).running() as sampler:
        fin, r = scenarios.loadclient(
            "streams",
            url,
            timeout=scenarios.streams_timeout(plan.seconds, ramp),
            size=plan.file_bytes,
            streams=plan.streams,
            range_bytes=plan.range_bytes,
            duration=plan.seconds,
            ramp=ramp,
        )
        threads = [n.server.process.num_threads() for n in nodes]
        spread = [
            _busy_threads(n.server, before, time.monotonic() - t_threads)
            for n, before in zip(nodes, threads0, strict=True)
        ]
    waited = [n.server.cpu_wait_seconds() - w for n, w in zip(nodes, waited0, strict=True)]
    t0, t1 = r["window_unix"]
    both = [b - a for a, b in zip(sampler.at(t0), sampler.at(t1), strict=True)]
    cpu, loop = both[0::2], both[1::2]  # whole process; its main thread (the event loop)
    window = t1 - t0
    gib = r["bytes"] / GIB
    streambot_cpu = sum(cpu[:-1])
    return {
        "streams": plan.streams,
        "streams_started": r["streams_started"],
        "aggregate_mib_per_s": round(r["bytes"] / window / MIB, 1),
        "streambot_cpu_s_per_gib": round(streambot_cpu / gib, 2) if gib else None,
        # Share of one core: above 1.0 the process used more than one core.
        "streambot_cpu_share": round(streambot_cpu / window, 2),
        "per_process_cpu_share": [round(c / window, 2) for c in cpu[:-1]],
        # The event loop's thread holds the GIL for TCP reads, framing, TL parsing and HTTP;
        # the rest is mostly the per-connection decrypt threads (TgCrypto releases the GIL).
        "event_loop_cpu_share": [round(c / window, 2) for c in loop[:-1]],
        "other_threads_cpu_share": [
            round((c - m) / window, 2) for c, m in zip(cpu[:-1], loop[:-1], strict=True)
        ],
        "streambot_threads": threads,
        # Over the whole load run, besides the main thread: how many threads did real work
        # (over 1% of a core) and the busiest one's share (a decrypt thread at 100% is a cap).
        "busy_other_threads": [b[0] for b in spread],
        "busiest_other_thread_share": [b[1] for b in spread],
        # Share of the run the event loop was ready but had no CPU (a busy machine): high values
        # mean the MiB/s understate the server; CPU s/GiB hardly depends on it.
        "event_loop_waited_share": [round(w / fin.wall, 2) for w in waited],
        "simulator_cpu_share": round(cpu[-1] / window, 2),
        "simulator_cpu_s_per_gib": round(cpu[-1] / gib, 2) if gib else None,
        "client_cpu_share": round(fin.cpu_share, 2),
        "statuses": r["statuses"],
        "client_errors": r["errors"],
    }


# ---------------------------------------------------------------------- the section
class Scale:
    """The scale section of one benchmark run; ``say`` reports progress."""

    def __init__(self, plan: ScalePlan, workdir: Path, say: Any) -> None:
        self.plan = plan
        self.dir = workdir / "scale"
        self.say = say
        self.telegram = Telegram(
            self.dir, rtt_ms=plan.rtt_ms, workers=min(64, max(plan.fleet_workers, 4))
        )
        self.extra_tokens: list[str] = []

    def tokens(self, n: int) -> list[str]:
        """``n`` worker tokens: the simulator's own first, then bots from ``POST /bots``."""
        have = list(self.telegram.info["worker_tokens"]) + self.extra_tokens
        while len(have) < n:
            bot = _http("POST", self.telegram.control + "/bots", {})
            self.extra_tokens.append(bot["token"])
            have.append(bot["token"])
        return have[:n]

    def run(self) -> dict[str, Any]:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.telegram.start()
        try:
            out: dict[str, Any] = {
                "rtt_ms": self.plan.rtt_ms,
                "streams": self.plan.streams,
                "range_mib": self.plan.range_bytes / MIB,
                "seconds": self.plan.seconds,
                "cpus": os.cpu_count(),
            }
            out["bots"] = self.bots()
            if self.plan.processes:
                out["processes"] = self.processes(out["bots"])
            out["fleet"] = self.fleet()
            return out
        finally:
            self.telegram.stop()

    def bots(self) -> list[dict[str, Any]]:
        rows = []
        for bots, connections in self.plan.bot_configs:
            port = free_port()
            node = Node(
                f"bots{bots}-c{connections}",
                self.dir,
                self.telegram,
                port=port,
                bot_token=self.telegram.info["bot_token"],
                worker_tokens=self.tokens(bots - 1),
                settings={"MEDIA_CONNECTIONS": str(connections)},
            )
            with running([node]):
                url = self.telegram.link(self.plan.file_bytes)
                r = saturate(url, [node], self.telegram, self.plan)
            r.update(bots=bots, media_connections=connections, processes=1)
            rows.append(r)
            self.say(
                f"scale: {bots} bot(s) x {connections} media connection(s): "
                f"{r['aggregate_mib_per_s']} MiB/s, {r['streambot_cpu_s_per_gib']} CPU s/GiB, "
                f"StreamBot {r['streambot_cpu_share']:.0%} of a core (event loop "
                f"{r['event_loop_cpu_share'][0]:.0%}, {r['busy_other_threads'][0]} busy threads "
                f"besides, the busiest {r['busiest_other_thread_share'][0]:.0%}), "
                f"simulator {r['simulator_cpu_share']:.0%}"
            )
        base = next((r for r in rows if r["bots"] == 1 and r["media_connections"] == 4), None)
        for r in rows:
            if base and base["aggregate_mib_per_s"]:
                r["ratio_vs_1_bot"] = round(
                    r["aggregate_mib_per_s"] / base["aggregate_mib_per_s"], 2
                )
        return rows

    def processes(self, bot_rows: list[dict[str, Any]]) -> dict[str, Any]:
        """2 processes on one port and one SQLite file against 1 process with the same bots.

        The bots of the largest one-process row (4 connections each) are split in two: the bot
        node has the main bot and workers, the web node as many workers of its own.
        """
        one = max(
            (r for r in bot_rows if r["media_connections"] == 4), key=lambda r: int(r["bots"])
        )
        total = int(one["bots"])
        half = max(1, total // 2)
        port = free_port()
        db = self.dir / "shared" / "streambot.sqlite3"
        db.parent.mkdir(parents=True, exist_ok=True)
        tokens = self.tokens(total - 1)
        shared = {"REUSE_PORT": "true", "DATABASE_PATH": str(db)}
        bot_node = Node(
            "proc-bot",
            self.dir,
            self.telegram,
            port=port,
            bot_token=self.telegram.info["bot_token"],
            worker_tokens=tokens[: half - 1],
            settings={"NODE_ROLE": "bot", **shared},
        )
        web_node = Node(
            "proc-web",
            self.dir,
            self.telegram,
            port=port,
            bot_token="",
            worker_tokens=tokens[half - 1 :],
            settings={"NODE_ROLE": "web", **shared},
        )
        with running([bot_node, web_node]):
            url = self.telegram.link(self.plan.file_bytes)
            two = saturate(url, [bot_node, web_node], self.telegram, self.plan)
        two.update(bots=total, media_connections=4, processes=2)
        ratio = (
            round(two["aggregate_mib_per_s"] / one["aggregate_mib_per_s"], 2)
            if one["aggregate_mib_per_s"]
            else None
        )
        self.say(
            f"scale: 2 processes, {total} bots: {two['aggregate_mib_per_s']} MiB/s "
            f"({two['per_process_cpu_share']} of a core each), "
            f"{two['streambot_cpu_s_per_gib']} CPU s/GiB; 1 process with the same bots: "
            f"{one['aggregate_mib_per_s']} MiB/s; ratio {ratio}"
        )
        return {"two_processes": two, "one_process": one, "ratio_2_vs_1": ratio}

    def fleet(self) -> dict[str, Any]:
        """Start-up and idle cost of N worker bots: (figure at N - figure at 0) / N."""
        n = self.plan.fleet_workers
        tokens = self.tokens(n)
        rows: dict[str, dict[str, Any]] = {}

        def measure(label: str, workers: int, stagger: str, data_dir: Path) -> None:
            node = Node(
                f"fleet-{label}",
                self.dir,
                self.telegram,
                port=free_port(),
                bot_token=self.telegram.info["bot_token"],
                worker_tokens=tokens[:workers],
                settings={"LOGIN_STAGGER_SECONDS": stagger},
                data_dir=data_dir,
            )
            logins0 = self.telegram.requests("auth.ImportBotAuthorization")
            t = time.monotonic()
            with running([node]):
                ready = time.monotonic() - t
                # Idle figures once the start-up's own bursts (threads, buffers) have settled.
                time.sleep(1.0)
                rows[label] = {
                    "workers": workers,
                    "login_stagger_seconds": float(stagger),
                    "ready_seconds": round(ready, 2),
                    "logins": self.telegram.requests("auth.ImportBotAuthorization") - logins0,
                    **node.resources(),
                }
            self.say(f"scale: fleet {label}: {rows[label]}")

        measure("0 workers", 0, "0", self.dir / "fleet0-data")
        # Fresh logins without the pause (the default 2 s would add N x 2 s of pure waiting),
        # then a restart from the saved sessions with the default pause, which it skips.
        data = self.dir / "fleetN-data"
        measure(f"{n} workers, fresh", n, "0", data)
        measure(f"{n} workers, restart", n, "2", data)
        zero = rows["0 workers"]
        per_bot = {
            key: round((rows[f"{n} workers, restart"][key] - zero[key]) / n, 3)
            for key in ("rss_mib", "threads", "fds")
        }
        fresh = rows[f"{n} workers, fresh"]
        per_bot["fresh_login_seconds"] = round(
            (fresh["ready_seconds"] - zero["ready_seconds"]) / n, 3
        )
        return {"workers": n, "runs": list(rows.values()), "per_worker_bot": per_bot}


def scale_section(plan: ScalePlan, workdir: Path, say: Any) -> dict[str, Any]:
    return Scale(plan, workdir, say).run()
