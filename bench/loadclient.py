"""A load generator in its own process: many concurrent streams, or many aborted downloads.

``python -m bench.loadclient streams URL --streams N --range-bytes S --duration D`` keeps N range
downloads running (each stream starts the next range when one ends) and counts the body bytes that
arrive in a D-second window that opens once every stream has its first answer, so the figure is
steady state, not ramp-up. ``python -m bench.loadclient abort URL --count C --concurrency K`` makes
C downloads that the client abandons: before the answer, after the first body bytes, or after 2 MiB.
``hangup URL --count C --read-bytes B`` is C viewers, one after another, who each ask for the
rest of the file from a block boundary, read B body bytes and close (a player probing a file).
``get URL --start A --end B`` times one range download (used only when curl is missing). Each
prints one JSON object. Raw asyncio streams with minimal HTTP/1.1 keep the client's own CPU per
byte low; its CPU share is measured from outside by the parent.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import random
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

READ_SIZE = 256 * 1024
HEADER_LIMIT = 64 * 1024


class BadAnswer(Exception):
    """The server's answer was not an HTTP/1.1 response we can follow."""


@dataclass(slots=True)
class Target:
    host: str
    port: int
    path: str
    size: int = 0

    @classmethod
    def of(cls, url: str, size: int) -> Target:
        parts = urlsplit(url)
        if parts.hostname is None:
            raise ValueError(f"not an http URL: {url}")
        return cls(parts.hostname, parts.port or 80, parts.path or "/", size)

    def request(self, start: int, end: int) -> bytes:
        return (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Range: bytes={start}-{end}\r\nUser-Agent: streambot-bench\r\n\r\n"
        ).encode()


@dataclass(slots=True)
class Tally:
    bytes: int = 0
    completed: int = 0
    errors: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)


async def read_head(reader: asyncio.StreamReader) -> tuple[int, int]:
    """Status and Content-Length of one response (its head consumed)."""
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > HEADER_LIMIT:
        raise BadAnswer("response head too large")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError) as exc:
        raise BadAnswer(f"bad status line {lines[0]!r}") from exc
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    return status, length


async def stream_worker(
    target: Target, range_bytes: int, tally: Tally, first: asyncio.Event, rng: random.Random
) -> None:
    """One viewer: range after range on one keep-alive connection, reconnecting after errors."""
    answered = False
    while True:
        try:
            reader, writer = await asyncio.open_connection(target.host, target.port, limit=1 << 20)
        except OSError:
            tally.errors += 1
            await asyncio.sleep(0.05)
            continue
        try:
            while True:
                start = rng.randrange(0, max(1, target.size - range_bytes))
                writer.write(target.request(start, start + range_bytes - 1))
                status, length = await read_head(reader)
                tally.statuses[status] += 1
                if not answered:
                    answered = True
                    first.set()
                remaining = length
                while remaining:
                    chunk = await reader.read(min(READ_SIZE, remaining))
                    if not chunk:
                        raise ConnectionResetError("closed mid-body")
                    remaining -= len(chunk)
                    tally.bytes += len(chunk)
                tally.completed += 1
                if status >= 400:
                    await asyncio.sleep(0.05)  # busy server: do not spin
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, BadAnswer):
            tally.errors += 1
        finally:
            writer.transport.abort()


async def run_streams(
    target: Target, streams: int, range_bytes: int, duration: float, ramp: float
) -> dict[str, object]:
    tally = Tally()
    answered = [asyncio.Event() for _ in range(streams)]
    rng = random.Random(7)
    tasks = []
    try:
        for i in range(streams):
            worker_rng = random.Random(rng.random())
            tasks.append(
                asyncio.create_task(
                    stream_worker(target, range_bytes, tally, answered[i], worker_rng)
                )
            )
            # Spread connects so the listen backlog never overflows (SYN retries cost 1 s).
            await asyncio.sleep(ramp / streams)
        all_answered = asyncio.gather(*(e.wait() for e in answered))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_answered, timeout=60)
        started = sum(e.is_set() for e in answered)
        bytes_before, completed_before, t0 = tally.bytes, tally.completed, time.perf_counter()
        wall0 = time.time()  # the window on the shared clock, for CPU sampled by the caller
        await asyncio.sleep(duration)
        window = time.perf_counter() - t0
        wall1 = wall0 + window
        measured, completed = tally.bytes - bytes_before, tally.completed - completed_before
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "streams": streams,
        "streams_started": started,
        "bytes": measured,
        "seconds": window,
        "window_unix": [wall0, wall1],
        "ranges_completed": completed,
        "errors": tally.errors,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
    }


async def one_get(target: Target, start: int, end: int) -> dict[str, object]:
    """One range download, timed like curl's ``-w``: the fallback when curl is not installed."""
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection(target.host, target.port, limit=1 << 20)
    try:
        writer.write(target.request(start, end))
        status, length = await read_head(reader)
        first = time.perf_counter() - t0
        got = 0
        while got < length:
            chunk = await reader.read(min(READ_SIZE, length - got))
            if not chunk:
                break
            got += len(chunk)
    finally:
        writer.transport.abort()
    return {
        "status": status,
        "bytes": got,
        "time_starttransfer": first,
        "time_total": time.perf_counter() - t0,
    }


ABORT_MODES = ("before_answer", "after_first_bytes", "after_2_mib")


async def one_abort(target: Target, mode: str, start: int, tally: Tally) -> None:
    reader, writer = await asyncio.open_connection(target.host, target.port, limit=1 << 20)
    try:
        writer.write(target.request(start, target.size - 1))
        await writer.drain()
        if mode == "before_answer":
            return
        status, _length = await read_head(reader)
        tally.statuses[status] += 1
        want = 1 if mode == "after_first_bytes" else 2 * 1024 * 1024
        got = 0
        while got < want:
            chunk = await reader.read(READ_SIZE)
            if not chunk:
                break
            got += len(chunk)
        tally.bytes += got
    finally:
        writer.transport.abort()  # RST: the viewer is gone mid-transfer
        tally.completed += 1


async def run_aborts(target: Target, count: int, concurrency: int) -> dict[str, object]:
    tally = Tally()
    rng = random.Random(11)
    jobs = iter(range(count))

    async def worker() -> None:
        for i in jobs:
            mode = ABORT_MODES[i % len(ABORT_MODES)]
            start = rng.randrange(0, max(1, target.size - 4 * 1024 * 1024))
            try:
                await one_abort(target, mode, start, tally)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, BadAnswer):
                tally.errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    by_mode = {m: len(range(i, count, len(ABORT_MODES))) for i, m in enumerate(ABORT_MODES)}
    return {
        "aborted": tally.completed,
        "by_mode": by_mode,
        "seconds": time.perf_counter() - started,
        "body_bytes": tally.bytes,
        "errors": tally.errors,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
    }


async def run_hangups(
    target: Target, count: int, read_bytes: int, block_bytes: int
) -> dict[str, object]:
    """Viewers one at a time: each asks for the rest of the file from a block boundary, reads
    ``read_bytes`` of body and closes, as in the streamer's read-ahead test."""
    tally = Tally()
    rng = random.Random(13)
    blocks = max(1, (target.size - 4 * read_bytes) // block_bytes)
    started = time.perf_counter()
    for _ in range(count):
        start = rng.randrange(0, blocks) * block_bytes
        try:
            reader, writer = await asyncio.open_connection(target.host, target.port)
        except OSError:
            tally.errors += 1
            continue
        try:
            writer.write(target.request(start, target.size - 1))
            status, _length = await read_head(reader)
            tally.statuses[status] += 1
            tally.bytes += len(await reader.readexactly(read_bytes))
            tally.completed += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, BadAnswer):
            tally.errors += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return {
        "viewers": tally.completed,
        "seconds": time.perf_counter() - started,
        "body_bytes": tally.bytes,
        "errors": tally.errors,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadclient", description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("streams")
    s.add_argument("url")
    s.add_argument("--size", type=int, required=True, help="size of the file behind URL")
    s.add_argument("--streams", type=int, required=True)
    s.add_argument("--range-bytes", type=int, default=8 * 1024 * 1024)
    s.add_argument("--duration", type=float, default=5.0)
    s.add_argument("--ramp", type=float, default=1.0)
    a = sub.add_parser("abort")
    a.add_argument("url")
    a.add_argument("--size", type=int, required=True)
    a.add_argument("--count", type=int, required=True)
    a.add_argument("--concurrency", type=int, default=50)
    h = sub.add_parser("hangup")
    h.add_argument("url")
    h.add_argument("--size", type=int, required=True)
    h.add_argument("--count", type=int, required=True)
    h.add_argument("--read-bytes", type=int, default=1024 * 1024)
    h.add_argument("--block-bytes", type=int, default=1024 * 1024)
    g = sub.add_parser("get")
    g.add_argument("url")
    g.add_argument("--start", type=int, required=True)
    g.add_argument("--end", type=int, required=True)
    args = parser.parse_args(argv)
    target = Target.of(args.url, getattr(args, "size", 0))
    if args.mode == "get":
        result = asyncio.run(one_get(target, args.start, args.end))
    elif args.mode == "streams":
        result = asyncio.run(
            run_streams(target, args.streams, args.range_bytes, args.duration, args.ramp)
        )
    elif args.mode == "hangup":
        result = asyncio.run(run_hangups(target, args.count, args.read_bytes, args.block_bytes))
    else:
        result = asyncio.run(run_aborts(target, args.count, args.concurrency))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
