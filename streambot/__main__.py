"""Command line: ``python -m streambot run | demo | check | memlog``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from streambot.config import ConfigError, Settings, ensure_link_secret

log = logging.getLogger("streambot")

EXIT_CONFIG = 2
EXIT_STARTUP = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m streambot", description=__doc__)
    parser.add_argument(
        "--env-file", type=Path, default=Path("config.env"), help="settings file (config.env)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the bot and the download server against Telegram")
    sub.add_parser("check", help="validate the configuration and exit")
    demo = sub.add_parser("demo", help="run everything offline on the Telegram simulator")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--rtt-ms", type=float, default=0.0, help="simulated Telegram round trip")
    demo.add_argument("--links-out", type=Path, help="write the links JSON here when ready")
    demo.add_argument("--workers", type=int, default=2, help="simulated worker bots")
    demo.add_argument("paths", nargs="*", type=Path, metavar="PATH")
    memlog = sub.add_parser("memlog", help="summarise memory log files")
    memlog.add_argument("files", nargs="+")
    return parser


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # pyrogram is chatty at INFO (session start/stop per media DC).
    logging.getLogger("pyrogram").setLevel(max(logging.WARNING, logging.getLogger().level))


def _load(args: argparse.Namespace, *, require_telegram: bool) -> Settings:
    try:
        return Settings.load(args.env_file, require_telegram=require_telegram)
    except ConfigError as exc:
        print("Configuration problems:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)


async def _run(settings: Settings) -> int:
    from streambot.app import create_app
    from streambot.fleet import FleetError

    secret = ensure_link_secret(settings)
    app = await create_app(settings, link_secret=secret)
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=settings.shutdown_grace_seconds
    )
    try:
        await runner.setup()
    except FleetError as exc:
        print(f"StreamBot could not start: {exc}", file=sys.stderr)
        print("Check the network connection to Telegram and the bot token.", file=sys.stderr)
        await runner.cleanup()
        return EXIT_STARTUP
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, settings.bind_host, settings.port)
        await site.start()
        log.info(
            "serving on %s:%s (links: %s)",
            settings.bind_host,
            settings.port,
            settings.public_base_url,
        )
        await stop.wait()
    finally:
        await runner.cleanup()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "memlog":
        from utils.memory_monitor import main as memlog_main

        return memlog_main(args.files)
    if args.command == "check":
        settings = _load(args, require_telegram=True)
        print("Configuration OK.")
        return 0
    if args.command == "run":
        settings = _load(args, require_telegram=True)
        configure_logging(settings.log_level)
        return asyncio.run(_run(settings))
    settings = _load(args, require_telegram=False)
    configure_logging(settings.log_level)
    from streambot.demo import run_demo

    asyncio.run(
        run_demo(
            settings,
            host=args.host,
            port=args.port,
            rtt_ms=args.rtt_ms,
            links_out=args.links_out,
            paths=args.paths,
            workers=args.workers,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
