"""Command line: ``python -m streambot run | demo | check | memlog | simulator``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from streambot import __version__, exitcodes
from streambot.config import ConfigError, Settings, load_link_secret

if TYPE_CHECKING:
    from streambot.demo import SyntheticFile
    from utils.smart_logger import SmartLogFilter

log = logging.getLogger("streambot")

EXIT_CONFIG = exitcodes.CONFIG
EXIT_STARTUP = exitcodes.STARTUP

T = TypeVar("T")


def _exits(*codes: int) -> str:
    return "exit status: " + "; ".join(f"{c} {exitcodes.DESCRIPTIONS[c]}" for c in codes)


def _int_arg(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _port_arg(text: str) -> int:
    port = _int_arg(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (0-65535; 0 = any free port)")
    return port


def _bounded(kind: type[int] | type[float], most: float) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` between 0 and ``most`` (nan is refused)."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not 0 <= value <= most:
            raise argparse.ArgumentTypeError(f"{text} must be between 0 and {most:g}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    # --env-file is accepted before or after the command (`--env-file X run`, `run --env-file X`).
    env_file = argparse.ArgumentParser(add_help=False)
    env_file.add_argument(
        "--env-file",
        type=Path,
        default=argparse.SUPPRESS,
        help="settings file (default: ./config.env if it exists); must exist when given",
    )
    parser = argparse.ArgumentParser(
        prog="python -m streambot",
        description="StreamBot: send a file to a Telegram bot, get a seekable HTTP link.",
        epilog="`python -m streambot COMMAND --help` shows a command's defaults and exit statuses.",
        parents=[env_file],
    )
    parser.add_argument("--version", action="version", version=f"streambot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run",
        parents=[env_file],
        help="run the bot and the download server against Telegram",
        description="Run the bot and the download server against Telegram until SIGINT/SIGTERM. "
        "Settings come from config.env and the environment (see config.env.sample).",
        epilog=_exits(
            exitcodes.OK, exitcodes.CONFIG, exitcodes.STARTUP, exitcodes.LOGIN_FLOOD_WAIT
        ),
    )
    run.add_argument(
        "--telegram",
        type=Path,
        metavar="FILE",
        help="instead of Telegram, use the running simulator described by this info file "
        "(written by `simulator --info-out FILE`); everything else is a normal run",
    )
    sub.add_parser(
        "check",
        parents=[env_file],
        help="validate the configuration and exit",
        description="Validate the configuration without connecting to Telegram: says which file "
        "it read, lists every invalid setting and warns about unknown or misspelt names.",
        epilog=_exits(exitcodes.OK, exitcodes.CONFIG) + " (warnings alone exit 0)",
    )
    demo = sub.add_parser(
        "demo",
        parents=[env_file],
        help="run everything offline on the Telegram simulator",
        description="Run the whole application offline on the built-in Telegram simulator (no "
        "credentials, no network) and serve each PATH, or a sample set. Standard input is your "
        "chat with the bot as its admin; SIGINT/SIGTERM (Ctrl-C) stops it.",
        epilog=_exits(exitcodes.OK, exitcodes.CONFIG, exitcodes.STARTUP),
    )
    demo.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    demo.add_argument(
        "--port",
        type=_port_arg,
        default=8080,
        help="TCP port (default: %(default)s; 0 = any free port, the links show the real one)",
    )
    demo.add_argument(
        "--rtt-ms",
        type=_bounded(float, 10_000),
        default=0.0,
        help="simulated Telegram round trip in ms (default: %(default)s)",
    )
    demo.add_argument(
        "--links-out", type=Path, help="write the links as JSON to this file when ready"
    )
    demo.add_argument(
        "--workers",
        type=_bounded(int, 64),
        default=2,
        help="simulated worker bots (default: %(default)s)",
    )
    demo.add_argument(
        "--synthetic",
        action="append",
        default=[],
        type=_synthetic,
        metavar="SIZE[:NAME]",
        help="also post a generated file of SIZE (4096, 512K, 24MiB, 1GiB; nothing is "
        "allocated); the same NAME always has the same bytes; repeatable",
    )
    demo.add_argument(
        "--telegram",
        choices=("inproc", "wire"),
        default="inproc",
        help="inproc (default): the simulator answers inside pyrogram's Session, fast; wire: a "
        "simulator process speaks MTProto over loopback TCP, so pyrogram's whole network stack runs",
    )
    demo.add_argument(
        "--file-dc",
        type=int,
        choices=range(1, 6),
        metavar="N",
        help="DC the served files live on (1-5; default: the bots' home DC), so the first "
        "request for a file runs the cross-DC authorization export/import; both Telegram modes",
    )
    demo.add_argument(
        "--telegram-info-out",
        type=Path,
        metavar="FILE",
        help="with --telegram wire: copy the simulator's info file (control API, DCs) here",
    )
    demo.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="files to serve")
    simulator = sub.add_parser(
        "simulator",
        help="serve the simulated Telegram over MTProto on loopback, with a control API",
        description="Serve the simulated Telegram over MTProto on loopback TCP (one port per DC) "
        "with an HTTP control API, for `run --telegram FILE`, `demo --telegram wire` and tests.",
        epilog=_exits(exitcodes.OK, exitcodes.CONFIG, exitcodes.STARTUP),
    )
    simulator.add_argument(
        "--host",
        default="127.0.0.1",
        help="address of the DC ports (default: %(default)s; the control API is loopback)",
    )
    simulator.add_argument(
        "--port",
        type=_port_arg,
        default=0,
        help="control API port (default 0: any free one); DCs use free ports",
    )
    simulator.add_argument(
        "--rtt-ms", type=_non_negative, default=0.0, help="round trip per packet (default: 0)"
    )
    simulator.add_argument(
        "--bandwidth-mib-s",
        type=_non_negative,
        default=0.0,
        help="bandwidth cap per connection, MiB/s (default 0: unlimited)",
    )
    simulator.add_argument(
        "--workers",
        type=int,
        choices=range(0, 65),
        metavar="N",
        default=2,
        help="worker bots besides the main bot (0-64; default: %(default)s)",
    )
    simulator.add_argument(
        "--file-dc", type=int, choices=range(1, 6), metavar="N", help="DC the files live on (1-5)"
    )
    simulator.add_argument(
        "--synthetic",
        action="append",
        default=[],
        type=_synthetic,
        metavar="SIZE[:NAME]",
        help="post a generated file of SIZE (as for demo); repeatable",
    )
    simulator.add_argument("--info-out", type=Path, help="write the info JSON here when ready")
    simulator.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop when the process that started the simulator exits, even if it was killed",
    )
    simulator.add_argument(
        "--log-level",
        default="WARNING",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="(default: %(default)s)",
    )
    simulator.add_argument("paths", nargs="*", type=Path, metavar="PATH")
    memlog = sub.add_parser(
        "memlog",
        help="summarise the memory log (per-task growth, peak episodes, leak check)",
        description="Summarise memory logs: per task the typical and worst RSS change from START "
        "to END, RSS peaks grouped into episodes, idle RSS by day, restarts, and a leak check "
        "over idle samples. Reads each FILE, and memory_*.log in each FOLDER (default: LOG_DIR "
        "from config.env, else ./logs). Streams its input: memory stays flat for any log size.",
        epilog=_exits(exitcodes.OK)
        + "; 2 no log found or one cannot be read; 3 --chart without matplotlib",
    )
    memlog.add_argument("files", nargs="*", type=Path, metavar="FILE|FOLDER")
    memlog.add_argument("--json", action="store_true", help="print the summary as JSON")
    memlog.add_argument(
        "--chart",
        type=Path,
        metavar="FILE.png",
        help="also draw RSS over time with task spans and restarts "
        "(needs matplotlib: pip install 'streambot[chart]')",
    )
    return parser


def _synthetic(text: str) -> SyntheticFile:
    from streambot.demo import SyntheticFile  # the demo's imports are heavy; only load them here

    try:
        return SyntheticFile.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be at least 0: {text!r}")
    return value


def configure_logging(
    level: str, *, cache_limit: int = 1000, window_seconds: float = 60.0
) -> SmartLogFilter:
    """Log to stderr through the rate limiter; returns it (``create_app`` finds it there too)."""
    from utils.smart_logger import install

    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    root = logging.getLogger()
    smart = install(root.handlers[0], window_seconds=window_seconds, max_keys=cache_limit)
    # pyrogram is chatty at INFO (session start/stop per media DC); APScheduler logs every run.
    for name in ("pyrogram", "apscheduler"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    return smart


def _configure_logging(settings: Settings) -> SmartLogFilter:
    return configure_logging(
        settings.log_level,
        cache_limit=settings.log_cache_limit,
        window_seconds=settings.log_rate_window_seconds,
    )


def _load(args: argparse.Namespace, *, require_telegram: bool, verbose: bool = False) -> Settings:
    """Settings, or exit 2 listing every problem. Warnings go to stderr; ``verbose`` (``check``)
    also says which file was read."""
    try:
        settings, report = Settings.load_checked(
            getattr(args, "env_file", None), require_telegram=require_telegram
        )
    except ConfigError as exc:
        if verbose:
            _print_source(exc.source)
        _print_warnings(exc.warnings)
        print("Configuration problems:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    if verbose:
        _print_source(report.source)
    _print_warnings(report.warnings)
    return settings


def _print_source(source: Path | None) -> None:
    if source is None:
        print("Read no settings file (no ./config.env); using the environment and defaults.")
    else:
        print(f"Read settings from {source} (the environment overrides it).")


def _print_warnings(warnings: Sequence[str]) -> None:
    if warnings:
        print("Configuration warnings:", file=sys.stderr)
        for warning in warnings:
            print(f"  - {warning}", file=sys.stderr)


def _fail(message: str, hint: str = "") -> int:
    """One paragraph on stderr, no traceback: start-up problems are the operator's to fix."""
    if not message.endswith((".", "?", "!")):
        message += "."
    print(f"StreamBot could not start: {message}" + (f" {hint}" if hint else ""), file=sys.stderr)
    return EXIT_STARTUP


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT/SIGTERM for the duration of the block (start-up included)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def unless_stopped(work: Awaitable[T], stop: asyncio.Event) -> tuple[bool, T | None]:
    """Await ``work`` unless ``stop`` is set first, in which case ``work`` is cancelled.

    Returns ``(True, result)`` or ``(False, None)``. Start-up can take up to
    TELEGRAM_CONNECT_TIMEOUT; a Ctrl-C during it must stop the process, not wait it out.
    """
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task.done():
        return True, task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False, None


async def _run(settings: Settings) -> int:
    from streambot.app import create_app, make_runner, make_site
    from streambot.fleet import FleetError, LoginFloodWait
    from streambot.sessionlock import SessionsLocked
    from streambot.store import StoreError

    stop = asyncio.Event()
    with stop_on_signals(stop):
        try:
            secret, fresh = load_link_secret(settings)
            app = await create_app(settings, link_secret=secret, link_secret_fresh=fresh)
        except OSError as exc:
            return _fail(f"DATA_DIR {settings.data_dir} is not usable: {exc.strerror}.")
        runner = make_runner(app)
        try:
            try:
                started, _ = await unless_stopped(runner.setup(), stop)
            except LoginFloodWait as exc:
                print(f"StreamBot could not start: {exc}.", file=sys.stderr)
                return exitcodes.LOGIN_FLOOD_WAIT
            except SessionsLocked as exc:
                return _fail(str(exc))
            except FleetError as exc:
                return _fail(
                    str(exc),
                    "Check that this machine can reach Telegram, that BOT_TOKEN, API_ID and "
                    "API_HASH are right, and that the bot is an admin of BIN_CHANNEL.",
                )
            except (OSError, StoreError) as exc:
                return _fail(str(exc))
            if not started:
                print("StreamBot stopped during start-up.", file=sys.stderr)
                return 0
            try:
                await make_site(
                    runner, settings.bind_host, settings.port, reuse_port=settings.reuse_port
                ).start()
            except OSError as exc:
                return _fail(
                    f"cannot listen on {settings.bind_host}:{settings.port}: {exc.strerror}.",
                    "Is another process using the port? Change BIND_HOST or PORT.",
                )
            log.info(
                "serving on %s:%s (links: %s)",
                settings.bind_host,
                settings.port,
                settings.public_base_url,
            )
            await stop.wait()
        finally:
            await runner.cleanup()
    print("StreamBot stopped.", file=sys.stderr)
    return 0


def _run_on_simulator(settings: Settings, info_file: Path) -> int:
    """``run --telegram FILE``: the production run, with pyrogram pointed at a simulator.

    The DC addresses and the simulator's RSA key are patched into pyrogram only for the duration
    of this run (``pointed_at``), so nothing of it can leak into a plain ``run``.
    """
    from streambot.simulator.wire.client import pointed_at
    from streambot.simulator.wire.info import InfoError, SimulatorInfo

    try:
        info = SimulatorInfo.load(info_file)
    except InfoError as exc:
        print(f"--telegram: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    log.info("Telegram is the simulator at %s", info.control_url)
    with pointed_at(info.dcs, info.rsa_public_key, media_dcs=info.media_dcs):
        return asyncio.run(_run(settings))


def _simulator(args: argparse.Namespace) -> int:
    from streambot.simulator.wire.process import SimulatorOptions, serve

    configure_logging(args.log_level)
    options = SimulatorOptions(
        host=args.host,
        port=args.port,
        rtt_ms=args.rtt_ms,
        bandwidth_mib_s=args.bandwidth_mib_s,
        workers=args.workers,
        file_dc=args.file_dc,
        synthetic=tuple(args.synthetic),
        paths=tuple(args.paths),
        info_out=args.info_out,
        exit_with_parent=args.exit_with_parent,
    )

    async def simulate() -> int:
        stop = asyncio.Event()
        with stop_on_signals(stop):
            try:
                await serve(options, stop)
            except OSError as exc:
                return _fail(f"the simulator cannot listen on {args.host}: {exc.strerror or exc}")
        print("StreamBot simulator stopped.", flush=True)
        return 0

    return asyncio.run(simulate())


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "memlog":
        from streambot.memlog import run as memlog

        return memlog(
            args.files, as_json=args.json, chart=args.chart, out=sys.stdout, err=sys.stderr
        )
    if args.command == "check":
        settings = _load(args, require_telegram=True, verbose=True)
        print("Configuration OK.")
        return 0
    if args.command == "run":
        settings = _load(args, require_telegram=True)
        _configure_logging(settings)
        if args.telegram is None:
            return asyncio.run(_run(settings))
        return _run_on_simulator(settings, args.telegram)
    missing = [str(p) for p in args.paths if not p.is_file()]
    if missing:
        print(f"{args.command}: not a readable file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "simulator":
        return _simulator(args)
    settings = _load(args, require_telegram=False)
    if args.telegram_info_out is not None and args.telegram != "wire":
        print("demo: --telegram-info-out needs --telegram wire", file=sys.stderr)
        return EXIT_CONFIG
    _configure_logging(settings)
    from streambot.demo import run_demo

    async def demo() -> int:
        stop = asyncio.Event()
        with stop_on_signals(stop):
            try:
                await run_demo(
                    settings,
                    host=args.host,
                    port=args.port,
                    rtt_ms=args.rtt_ms,
                    links_out=args.links_out,
                    paths=args.paths,
                    synthetic=args.synthetic,
                    workers=args.workers,
                    stop=stop,
                    telegram=args.telegram,
                    telegram_info_out=args.telegram_info_out,
                    file_dc=args.file_dc,
                )
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
                    return _fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror}.")
                return _fail(str(exc))
        return 0

    return asyncio.run(demo())


if __name__ == "__main__":
    sys.exit(main())
