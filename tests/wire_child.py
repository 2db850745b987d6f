"""A wire simulator in a child process, for tests whose figures depend on CPU or timing.

In the test's own process the server's encryption would share one event loop and the GIL with the
client under test. ``python -m tests.wire_child WORKERS FILES BANDWIDTH`` builds the same world as
:func:`scenario` (deterministic: bot tokens, channel and message ids follow from the order of
creation), serves it over MTProto, prints one JSON line (addresses, RSA key) and serves until its
stdin closes. The test process builds the same world without serving it, for settings and contents.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from streambot.simulator import SyntheticContent
from streambot.simulator.world import World, build_world
from streambot.units import MIB


def scenario(
    workers: int, files: int, size_mib: int
) -> tuple[World, list[tuple[int, SyntheticContent]]]:
    world = build_world(workers=workers)
    stored = []
    for i in range(files):
        content = SyntheticContent(size_mib * MIB, seed=1000 + i)
        _f, msg_id = world.store(content, name=f"f{i}.bin")
        stored.append((msg_id, content))
    return world, stored


async def _serve(workers: int, files: int, size_mib: int, bandwidth: float, rtt_ms: float) -> None:
    from streambot.simulator.wire.server import WireTelegram

    world, _ = scenario(workers, files, size_mib)
    server = WireTelegram(world.telegram, bandwidth_mib_s=bandwidth, rtt_ms=rtt_ms, salt_period=0)
    await server.start()
    info = {
        "dcs": {str(k): list(v) for k, v in server.dcs.items()},
        "media_dcs": {str(k): list(v) for k, v in server.media_dcs.items()},
        "pem": server.rsa_public_pem,
    }
    print(json.dumps(info), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    print(json.dumps(server.stats()), flush=True)
    await server.close()


@dataclass
class Child:
    info: dict[str, Any]
    process: asyncio.subprocess.Process

    @property
    def dcs(self) -> dict[int, tuple[str, int]]:
        return {int(k): (v[0], int(v[1])) for k, v in self.info["dcs"].items()}

    @property
    def media_dcs(self) -> dict[int, tuple[str, int]]:
        return {int(k): (v[0], int(v[1])) for k, v in self.info["media_dcs"].items()}


@contextlib.asynccontextmanager
async def child_server(
    workers: int, files: int, size_mib: int, *, bandwidth: float = 0.0, rtt_ms: float = 0.0
) -> AsyncIterator[Child]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.wire_child",
        str(workers),
        str(files),
        str(size_mib),
        str(bandwidth),
        str(rtt_ms),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stdin is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    try:
        yield Child(json.loads(line), process)
    finally:
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


if __name__ == "__main__":
    w, n, s, bw, rtt = sys.argv[1:6]
    asyncio.run(_serve(int(w), int(n), int(s), float(bw), float(rtt)))
