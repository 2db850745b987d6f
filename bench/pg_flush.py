"""Counter flushes from several nodes into one PostgreSQL, through StreamBot's own store.

    python -m bench.pg_flush postgresql://user@host/db [--nodes 3] [--flushes 300] [--keys 100]

Each node is a process with its own ``PgStore``; all start flushing at the same moment (a barrier).
A flush is what ``Bandwidth.flush`` sends: one global counter plus ``--keys`` owner and file counters
of today's shape, under a fresh flush id, as one sorted UPSERT. Every process tallies what it sent,
and the sums in the database are compared exactly at the end. It works in a private schema that it
drops afterwards, so any database will do. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import random
import statistics
import time
import uuid
from collections import Counter
from typing import Any

import asyncpg

from streambot.pg_store import PgStore

DAY = "2026-11-30"


def batch(rng: random.Random, keys: int) -> dict[tuple[str, str, str], int]:
    out = {(DAY, "global", ""): rng.randrange(1, 1 << 20)}
    while len(out) < keys + 1:
        if rng.random() < 0.3:
            out[(DAY, "owner", str(rng.randrange(50)))] = rng.randrange(1, 1 << 20)
        else:
            out[(DAY, "file", str(rng.randrange(2000)))] = rng.randrange(1, 1 << 20)
    return out


def node(dsn: str, seed: int, flushes: int, keys: int, barrier: Any, out: Any) -> None:
    async def main() -> tuple[list[float], Counter[tuple[str, str, str]]]:
        store = await PgStore(dsn, pool_size=1).open()
        rng = random.Random(seed)
        sent: Counter[tuple[str, str, str]] = Counter()
        batches = [batch(rng, keys) for _ in range(flushes)]
        for b in batches:
            sent.update(b)
        times = []
        barrier.wait()
        for b in batches:
            t = time.perf_counter()
            await store.add_bandwidth(b, flush_id=uuid.uuid4().hex)
            times.append(time.perf_counter() - t)
        await store.close()
        return times, sent

    out.put(asyncio.run(main()))


async def schema(dsn: str, name: str, create: bool) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f"{'CREATE' if create else 'DROP'} SCHEMA {name}{'' if create else ' CASCADE'}"
        )
    finally:
        await conn.close()


async def migrate(dsn: str) -> None:
    store = await PgStore(dsn).open()
    await store.close()


async def db_sums(dsn: str) -> Counter[tuple[str, str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT day::text, scope, key, bytes FROM bandwidth")
    finally:
        await conn.close()
    return Counter({(r["day"], r["scope"], r["key"]): r["bytes"] for r in rows})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pg_flush", description=__doc__)
    parser.add_argument("dsn")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--flushes", type=int, default=300)
    parser.add_argument("--keys", type=int, default=100)
    args = parser.parse_args()
    name = f"bench_{uuid.uuid4().hex[:8]}"
    dsn = f"{args.dsn}{'&' if '?' in args.dsn else '?'}search_path={name}"
    asyncio.run(schema(args.dsn, name, True))
    try:
        asyncio.run(migrate(dsn))  # once, outside the timed part
        ctx = mp.get_context("spawn")
        barrier, out = ctx.Barrier(args.nodes), ctx.Queue()
        procs = [
            ctx.Process(target=node, args=(dsn, i, args.flushes, args.keys, barrier, out))
            for i in range(args.nodes)
        ]
        start = time.perf_counter()
        for p in procs:
            p.start()
        results = [out.get(timeout=600) for _ in procs]
        wall = time.perf_counter() - start
        for p in procs:
            p.join()
        times = sorted(t for ts, _ in results for t in ts)
        sent: Counter[tuple[str, str, str]] = Counter()
        for _, s in results:
            sent.update(s)
        exact = asyncio.run(db_sums(dsn)) == sent
        busy = sum(sum(ts) for ts, _ in results) / args.nodes  # per node, excluding start-up
        flushes = args.nodes * args.flushes
        counters = flushes * (args.keys + 1)
        print(
            json.dumps(
                {
                    "nodes": args.nodes,
                    "flushes": flushes,
                    "counters_per_flush": args.keys + 1,
                    "flushes_per_s": round(flushes / busy),
                    "counters_per_s": round(counters / busy),
                    "flush_ms_p50": round(statistics.median(times) * 1000, 2),
                    "flush_ms_p99": round(times[int(len(times) * 0.99) - 1] * 1000, 2),
                    "sums_exact": exact,
                    "wall_s": round(wall, 2),
                }
            )
        )
    finally:
        asyncio.run(schema(args.dsn, name, False))


if __name__ == "__main__":
    main()
