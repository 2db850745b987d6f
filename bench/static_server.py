"""The ceiling: aiohttp's own ``web.FileResponse`` serving one local file, nothing else.

``python -m bench.static_server --port P --ready-file F PATH`` serves PATH at ``/<its name>`` on
127.0.0.1 and creates F once listening. ``AIOHTTP_NOSENDFILE=1`` in the environment makes aiohttp
copy the bytes through Python instead of ``sendfile(2)``. No access log, like the demo under test.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from aiohttp import web


async def serve(path: Path, port: int, ready_file: Path) -> None:
    async def handler(request: web.Request) -> web.FileResponse:
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/" + path.name, handler)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.to_thread(ready_file.write_text, "ready\n")
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.static_server", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("path", type=Path)
    args = parser.parse_args()
    asyncio.run(serve(args.path.resolve(), args.port, args.ready_file))


if __name__ == "__main__":
    main()
