"""Processes of a benchmark run: servers under test and load generators, measured from outside.

A server's CPU seconds and memory are read from /proc through psutil, so the figures include
everything the process does (event loop, worker threads, the simulator) and nothing of the load
generator. A load generator's CPU seconds come from the kernel's accounting of reaped children.
Every process started here is stopped in ``finally`` blocks; nothing outlives the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import psutil

REPO = Path(__file__).resolve().parent.parent


class BenchError(Exception):
    """A process of the benchmark failed to start or answered wrongly; the run cannot go on."""


class Sampler:
    """Calls :meth:`sample` every ``interval`` seconds in a thread while :meth:`running` is open.

    A thread, not a task: the bench drives its load generators with blocking calls meanwhile.
    """

    def __init__(self, name: str, interval: float) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def sample(self) -> bool:
        """Take one sample; False ends the sampling (what it watches is gone)."""
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.sample():
                return
            self._stop.wait(self._interval)

    @contextlib.contextmanager
    def running(self) -> Iterator[Self]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=5)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A TCP port free on loopback right now, for a server that binds it a moment later.

    The port comes from outside the kernel's ephemeral range. ``bind(0)`` would pick from inside
    it, where the kernel also picks the source port of every outgoing connection. Between this
    probe and the server's bind, one of the many loopback connections a run opens (bots to the
    simulator, load generators to servers) can take the port. CI failed once that way, with
    "Address already in use".
    """
    low, high = _ephemeral_range()
    below, above = range(10_000, low), range(high + 1, 65_536)
    candidates = below if len(below) >= len(above) else above
    rng = random.SystemRandom()
    for _ in range(100):
        port = rng.choice(candidates) if candidates else 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise BenchError("no free TCP port on loopback outside the ephemeral range")


def python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for our Python subprocesses: the checkout importable, no stray settings."""
    from streambot.config import Settings

    names = {f.upper() for f in Settings.__dataclass_fields__}
    env = {
        k: v for k, v in os.environ.items() if k not in names and not k.startswith("MULTI_TOKEN")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@dataclass(frozen=True, slots=True)
class Finished:
    """A load generator that ran to its end."""

    returncode: int
    stdout: str
    stderr: str
    wall: float
    cpu: float  # user + system seconds of the process and everything it waited for

    @property
    def cpu_share(self) -> float:
        """Fraction of one core the process used while it ran."""
        return self.cpu / self.wall if self.wall > 0 else 0.0


def run_measured(
    cmd: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None
) -> Finished:
    """Run ``cmd`` to completion and account its CPU time.

    The CPU time is the growth of RUSAGE_CHILDREN across the wait, which is exact because the
    benchmark runs one load generator at a time and reaps servers only outside measurements.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            list(cmd), stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"{cmd[0]} did not finish within {timeout:.0f}s") from exc
        finally:
            if proc.returncode is None:
                proc.kill()
                proc.wait()
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Finished(proc.returncode, stdout, stderr, wall, cpu)


class Server:
    """A server process under test: started, probed from /proc, always stopped."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        ready: Callable[[], bool],
        start_timeout: float = 60.0,
    ) -> None:
        self.name = name
        self._cmd = list(cmd)
        self._env = dict(env)
        self._cwd = cwd
        self._ready = ready
        self._start_timeout = start_timeout
        self._log = cwd / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._ps: psutil.Process | None = None

    def launch(self) -> None:
        """Start the process without waiting (several servers may start side by side)."""
        with self._log.open("wb") as log:
            self._proc = subprocess.Popen(
                self._cmd,
                cwd=self._cwd,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._ps = psutil.Process(self._proc.pid)

    def wait_ready(self) -> None:
        proc = self._proc
        if proc is None:
            raise BenchError(f"{self.name} was never launched")
        deadline = time.monotonic() + self._start_timeout
        while not self._ready():
            if proc.poll() is not None:
                raise BenchError(f"{self.name} exited at start-up:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} not ready after {self._start_timeout:.0f}s")
            time.sleep(0.05)

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM) without waiting: servers shut down side by side."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> Server:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def process(self) -> psutil.Process:
        if self._ps is None:
            raise BenchError(f"{self.name} is not running")
        return self._ps

    def cpu_seconds(self) -> float:
        t = self.process.cpu_times()
        return float(t.user + t.system)

    def cpu_wait_seconds(self) -> float:
        """Seconds the main thread (the event loop) was runnable but waited for a CPU.

        From /proc/PID/schedstat; a large share means other work on the machine starved the
        server, so its figures understate what it can do. 0 where the kernel does not report it.
        """
        try:
            fields = Path(f"/proc/{self.process.pid}/schedstat").read_text().split()
        except OSError:
            return 0.0
        return int(fields[1]) / 1e9 if len(fields) > 1 else 0.0

    def children_cpu_seconds(self) -> float:
        """CPU seconds of the processes this server started (the wire simulator of a wire demo)."""
        total = 0.0
        for child in self.process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                t = child.cpu_times()
                total += t.user + t.system
        return total

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    def reset_peak_rss(self) -> bool:
        """Restart the kernel's peak-RSS mark (VmHWM); False where /proc does not allow it."""
        try:
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def peak_rss(self) -> int:
        """The kernel's high-water mark of resident memory since start or the last reset."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        return int(match[1]) * 1024 if match else self.rss()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self._log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


#: What every StreamBot under test runs with, whatever the section.
SERVER_SETTINGS = {
    # Access logs off for every server compared; warnings still reach the log.
    "LOG_LEVEL": "WARNING",
    "SHUTDOWN_GRACE_SECONDS": "1",
    # Every simulated viewer comes from 127.0.0.1: per-client caps would measure themselves,
    # not the server (the hostile-clients scenario sets its own).
    "MAX_STREAMS_PER_CLIENT": "100000",
    "MAX_CONNECTIONS_PER_CLIENT": "100000",
}


def streambot_command(run_dir: Path, *args: str) -> list[str]:
    """``python -m streambot ARGS`` with an empty env file: settings come from the environment."""
    env_file = run_dir / "bench.env"
    env_file.write_text("# empty: the benchmark passes its settings in the environment\n")
    return [sys.executable, "-m", "streambot", "--env-file", str(env_file), *args]


def demo_server(
    name: str,
    workdir: Path,
    *,
    rtt_ms: float,
    settings: Mapping[str, str],
    synthetic: Sequence[str],
    telegram: str = "inproc",
    file_dc: int | None = None,
) -> tuple[Server, Path]:
    """The real application in demo mode; returns the server and where it writes its links.

    ``telegram="wire"`` runs the demo against a simulator child process over MTProto on loopback,
    so the server's figures include pyrogram's whole network stack (decryption included).
    ``file_dc`` stores the files on that DC instead of the bots' home DC.
    """
    run_dir = workdir / name
    run_dir.mkdir(parents=True, exist_ok=True)
    links = run_dir / "links.json"
    links.unlink(missing_ok=True)
    port = free_port()
    cmd = streambot_command(
        run_dir,
        "demo",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--rtt-ms",
        str(rtt_ms),
        "--links-out",
        str(links),
        "--telegram",
        telegram,
    )
    for spec in synthetic:
        cmd += ["--synthetic", spec]
    if file_dc is not None:
        cmd += ["--file-dc", str(file_dc)]
    env = python_env({**SERVER_SETTINGS, "LOG_DIR": str(run_dir / "logs"), **settings})
    return Server(name, cmd, env=env, cwd=run_dir, ready=links.exists), links


def static_server(name: str, workdir: Path, path: Path, *, sendfile: bool) -> tuple[Server, str]:
    """aiohttp's own ``web.FileResponse`` serving ``path``; returns the server and the file's URL."""
    run_dir = workdir / name
    run_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    ready = run_dir / "ready"
    ready.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "bench.static_server",
        "--port",
        str(port),
        "--ready-file",
        str(ready),
        str(path),
    ]
    extra = {} if sendfile else {"AIOHTTP_NOSENDFILE": "1"}
    server = Server(name, cmd, env=python_env(extra), cwd=run_dir, ready=ready.exists)
    return server, f"http://127.0.0.1:{port}/{path.name}"


def read_links(path: Path) -> dict[str, str]:
    """File name -> download URL from the demo's links JSON."""
    return {e["name"]: e["download_url"] for e in json.loads(path.read_text())}


def scrape(base_url: str, timeout: float = 10.0) -> dict[str, float]:
    """The server's /metrics as ``{"name{labels}": value}`` (comments skipped)."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=timeout) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[key] = float(value)
    return out


def wait_for(check: Callable[[], bool], *, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``check`` until it holds or ``timeout`` passes; returns whether it held."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
