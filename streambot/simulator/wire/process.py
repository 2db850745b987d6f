"""``python -m streambot simulator``: the simulated Telegram as its own process, on loopback.

One world (bots, storage channel, admin, files) behind the MTProto server (one port per DC) and the
control API. When every port listens, the info file is written atomically and one line
``StreamBot simulator ready: <control_url>`` goes to stdout; SIGINT/SIGTERM stop it cleanly
(control API first, then every MTProto connection).

Running Telegram in a process of its own is what makes CPU figures honest: the StreamBot process
pays for decryption and framing, the simulator pays for encryption and its world.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from streambot.atomicfile import atomic_write
from streambot.simulator.samples import SyntheticFile, seed_files
from streambot.simulator.wire.control import control_app
from streambot.simulator.wire.info import InfoFile, SimulatorInfo
from streambot.simulator.world import DEMO_ADMIN_ID, SIM_API_HASH, SIM_API_ID, build_world

READY_LINE = "StreamBot simulator ready: "
CONTROL_HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class SimulatorOptions:
    host: str = "127.0.0.1"  # where the DC ports listen
    port: int = 0  # the control API's port (on loopback); each DC listens on a free port of host
    rtt_ms: float = 0.0
    bandwidth_mib_s: float = 0.0  # per connection; 0 = unlimited
    workers: int = 2
    file_dc: int | None = None  # the DC the seeded files live on (default: the bots' home DC)
    synthetic: Sequence[SyntheticFile] = ()
    paths: Sequence[Path] = ()
    info_out: Path | None = None
    exit_with_parent: bool = False  # stop when the process that started us is gone


async def serve(options: SimulatorOptions, stop: asyncio.Event) -> SimulatorInfo:
    """Run the simulator until ``stop`` is set; returns the info it published."""
    from streambot.simulator.wire.server import WireTelegram

    world = build_world(workers=options.workers)
    seeded = seed_files(world.telegram, options.paths, options.synthetic, dc_id=options.file_dc)
    files = tuple(
        InfoFile(
            name=f.name,
            size=f.size,
            message_id=world.telegram.post_file(world.channel, f),
            dc=f.dc_id,
            path=str(path.resolve()) if path else None,
            mime_type=f.mime_type,
        )
        for path, f in seeded
    )
    wire = WireTelegram(
        world.telegram,
        host=options.host,
        rtt_ms=options.rtt_ms,
        bandwidth_mib_s=options.bandwidth_mib_s,
    )
    await wire.start()
    info_json: dict[str, object] = {}
    # A client's long poll (GET /replies?wait=...) may still be waiting when we stop: cut it after
    # a second rather than aiohttp's 60 s, or every `demo --telegram wire` takes 10 s to stop
    # (its SIGKILL deadline for this process).
    runner = web.AppRunner(
        control_app(world, wire, dcs=frozenset(wire.dcs), info=info_json),
        handle_signals=False,
        shutdown_timeout=1.0,
    )
    try:
        await runner.setup()
        # Loopback whatever --host says: the control API reads files by path and injects faults,
        # which nothing off this machine should be able to do. --host is for the DC ports.
        site = web.TCPSite(runner, CONTROL_HOST, options.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        info = SimulatorInfo(
            control_url=f"http://{_url_host(host)}:{port}",
            dcs=dict(wire.dcs),
            api_id=SIM_API_ID,
            api_hash=SIM_API_HASH,
            bot_token=world.main_bot.token,
            worker_tokens=tuple(b.token for b in world.workers),
            bin_channel=world.channel_id,
            admin_id=DEMO_ADMIN_ID,
            rsa_public_key=wire.rsa_public_pem,
            files=files,
            media_dcs=dict(wire.media_dcs),
            pid=os.getpid(),
        )
        info_json.update(info.to_json())
        if options.info_out is not None:
            document = json.dumps(info_json, indent=2).encode() + b"\n"
            # Owner-only: it holds the (simulated) bot tokens, like any credential file.
            await asyncio.to_thread(atomic_write, options.info_out, document, mode=0o600)
        print(READY_LINE + info.control_url, flush=True)
        with _stopped_when_parent_exits(stop, enabled=options.exit_with_parent):
            await stop.wait()
        return info
    finally:
        await runner.cleanup()
        await wire.close()


@contextlib.contextmanager
def _stopped_when_parent_exits(stop: asyncio.Event, *, enabled: bool) -> Iterator[None]:
    """Set ``stop`` when our parent process exits (a demo killed with SIGKILL cannot stop us).

    A pidfd becomes readable when the process ends, so this waits on an event, not a poll. Where
    pidfds do not exist (not Linux, kernel < 5.3) the child simply keeps the old behaviour.
    """
    if not enabled:
        yield
        return
    parent = os.getppid()
    try:
        fd = os.pidfd_open(parent)
    except (AttributeError, OSError):
        yield
        return
    loop = asyncio.get_running_loop()
    loop.add_reader(fd, stop.set)
    try:
        if os.getppid() != parent:  # it died before the pidfd was open
            stop.set()
        yield
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
