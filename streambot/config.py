"""Settings: read from ``config.env`` and the process environment, validated once, then frozen.

Every setting is declared once, below, with its type, default, example, group and documentation.
That single declaration drives parsing, validation messages and ``config.env.sample`` (a test keeps the
committed sample identical to :func:`render_sample`), so code, docs and the sample cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import secrets
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from dotenv import dotenv_values

from streambot.atomicfile import atomic_write
from streambot.budget import crowded_block
from streambot.private import FILE_MODE, tighten

GROUPS = (
    "Telegram",
    "Web server",
    "Links",
    "Access",
    "Fleet",
    "Streaming",
    "Caches",
    "Scheduler",
    "Memory",
    "Bandwidth",
    "Logging",
    "Nodes",
)

Check = Callable[[Any], str | None]

#: Read when no ``--env-file`` is given, if present.
DEFAULT_ENV_FILE = Path("config.env")


class ConfigError(Exception):
    """One or more settings are invalid; ``problems`` holds one readable line per problem.

    ``warnings`` (unknown names, ...) and ``source`` (the file read, or None) are carried too:
    a misspelt name is often the reason a required setting is "missing".
    """

    def __init__(
        self,
        problems: list[str],
        *,
        warnings: Sequence[str] = (),
        source: Path | None = None,
    ) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        self.warnings = tuple(warnings)
        self.source = source


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What ``check`` tells the operator besides the settings: the file read and the warnings."""

    source: Path | None
    warnings: tuple[str, ...]


def _cross_field_problems(
    cls: type,
    values: Mapping[str, Any],
    invalid: Set[str] = frozenset(),
) -> list[str]:
    """Problems between settings that are each valid alone (checked once every value parsed).

    A check involving a setting already reported invalid (``invalid``, field names) is skipped:
    it would compare against the default instead of what the operator wrote, and blame the
    wrong variable.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}

    def value(name: str) -> Any:
        return values.get(name, defaults[name])

    def valid(*names: str) -> bool:
        return invalid.isdisjoint(names)

    problems = []
    warning, critical = value("memory_warning_percent"), value("memory_critical_percent")
    if valid("memory_warning_percent", "memory_critical_percent") and warning >= critical:
        problems.append(
            f"MEMORY_WARNING_PERCENT ({warning:g}) must be below MEMORY_CRITICAL_PERCENT "
            f"({critical:g}), e.g. MEMORY_WARNING_PERCENT=80 with MEMORY_CRITICAL_PERCENT=95"
        )
    # A paused viewer keeps the block it is being sent; if MAX_STREAMS of them could fill the
    # budget, a new viewer would wait for the stale-stream sweep before its first byte. Streams
    # that start on a crowded server use half blocks (budget.crowded_block), so that is the floor.
    streams, block_kib = value("max_streams"), value("stream_block_size_kib")
    if valid("max_streams", "stream_block_size_kib", "stream_memory_budget_mb"):
        crowded_kib = crowded_block(block_kib * 1024) // 1024
        needed = -(-streams * crowded_kib // 1024)
        budget = value("stream_memory_budget_mb")
        if budget < needed:
            problems.append(
                f"STREAM_MEMORY_BUDGET_MB ({budget}) must hold one block per stream: at least "
                f"MAX_STREAMS x {crowded_kib} KiB (half of STREAM_BLOCK_SIZE_KIB, the block of "
                f"a crowded server) = {needed} MiB with MAX_STREAMS={streams} and "
                f"STREAM_BLOCK_SIZE_KIB={block_kib}, e.g. STREAM_MEMORY_BUDGET_MB={needed} "
                "(or fewer streams, or smaller blocks)"
            )
    if valid("database_url", "link_secret") and value("database_url") and not value("link_secret"):
        problems.append(
            "LINK_SECRET is required when DATABASE_URL is set: every node must sign and check "
            "links with the same secret, e.g. LINK_SECRET=<the same 48 random characters on "
            "every node>"
        )
    if (
        valid("node_role", "worker_tokens")
        and value("node_role") == "web"
        and not value("worker_tokens")
    ):
        problems.append(
            "NODE_ROLE=web needs its own worker bots to download with, e.g. "
            "MULTI_TOKEN1=123456789:AAExampleExampleExampleExampleExam (a token no other node uses)"
        )
    web = valid("node_role") and value("node_role") == "web"
    # A web node on a database of its own would serve links the bot node revoked or banned, and
    # count quotas nobody else sees; without the bot node's secret every link is refused.
    if web and valid("database_url", "database_path"):
        if not value("database_url") and not value("database_path"):
            problems.append(
                "NODE_ROLE=web must share the bot node's database: set DATABASE_URL (nodes on "
                "several machines) or DATABASE_PATH (the bot node's SQLite file, same host), "
                "e.g. DATABASE_PATH=/var/lib/streambot/shared/streambot.sqlite3"
            )
        elif not value("database_url") and valid("link_secret") and not value("link_secret"):
            problems.append(
                "NODE_ROLE=web needs the bot node's LINK_SECRET, or it refuses every link the "
                "bot node made, e.g. LINK_SECRET=<the same 48 random characters on every node>"
            )
    return problems


def _setting(
    default: Any,
    *,
    group: str,
    doc: str,
    example: str,
    secret: bool = False,
    required: bool = False,
    check: Check | None = None,
    suggest: Callable[[Any], str | None] | None = None,
) -> Any:
    assert group in GROUPS, group
    meta = {
        "group": group,
        "doc": doc,
        "example": example,
        "secret": secret,
        "required": required,
        "check": check,
        "suggest": suggest,
    }
    return field(default=default, metadata=meta)


def _at_least(n: float) -> Check:
    return lambda v: None if v >= n else f"must be at least {n}"


def _between(lo: float, hi: float) -> Check:
    return lambda v: None if lo <= v <= hi else f"must be between {lo} and {hi}"


def _port(v: int) -> str | None:
    return None if 1 <= v <= 65535 else "must be a TCP port between 1 and 65535"


def _api_hash(v: str) -> str | None:
    return None if re.fullmatch(r"[0-9a-f]{32}", v) else "must be 32 lowercase hex characters"


def _bot_token(v: str) -> str | None:
    return None if re.fullmatch(r"\d{5,}:[\w-]{30,}", v) else "is not a bot token from @BotFather"


def _channel(v: int) -> str | None:
    return None if v < -1_000_000_000_000 else "must be a channel id starting with -100"


def _channel_fix(v: int) -> str | None:
    """``1234567890`` or ``-1234567890`` (the id without the -100 prefix): the id meant."""
    digits = str(abs(v))
    return f"-100{digits}" if v and len(digits) >= 9 else None


def _base_url(v: str) -> str | None:
    if v and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", v):
        return "must be an http(s) URL without query or fragment"
    return None


def _log_level(v: str) -> str | None:
    ok = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
    return None if v.upper() in ok else "must be one of " + ", ".join(sorted(ok))


def _daily_time(v: str) -> str | None:
    return (
        None if re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d", v) else "must be a time HH:MM (24-hour)"
    )


def _node_role(v: str) -> str | None:
    return None if v in ("bot", "web") else "must be bot or web"


def _database_url(v: str) -> str | None:
    if v and not re.fullmatch(r"postgres(ql)?://\S+", v):
        return "must be a postgresql:// URL"
    return None


def _networks(v: str) -> str | None:
    for item in re.split(r"[,\s]+", v.strip()):
        if not item:
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            return f"has {item!r}, which is not an IP address or network"
    return None


def _link_secret(v: str) -> str | None:
    return None if not v or len(v) >= 32 else "must be at least 32 characters"


@dataclass(frozen=True, slots=True)
class Settings:
    # --- Telegram
    api_id: int = _setting(
        0,
        group="Telegram",
        required=True,
        example="123456",
        doc="API id of your Telegram application (https://my.telegram.org/apps).",
        check=_at_least(1),
    )
    api_hash: str = _setting(
        "",
        group="Telegram",
        required=True,
        secret=True,
        example="0123456789abcdef0123456789abcdef",
        doc="API hash of the same application.",
        check=_api_hash,
    )
    bot_token: str = _setting(
        "",
        group="Telegram",
        required=True,
        secret=True,
        example="123456789:AAExampleExampleExampleExampleExam",
        doc="Token of the main bot from @BotFather; this bot talks to users.",
        check=_bot_token,
    )
    bin_channel: int = _setting(
        0,
        group="Telegram",
        required=True,
        example="-1001234567890",
        doc="Private storage channel; every bot of the fleet must be an admin of it.",
        check=_channel,
        suggest=_channel_fix,
    )
    worker_tokens: tuple[str, ...] = _setting(
        (),
        group="Telegram",
        secret=True,
        example="MULTI_TOKEN1=123456789:AAExampleExampleExampleExampleExam",
        doc="MULTI_TOKEN1..N: extra download-only bots (workers); numbered, no gaps needed.",
    )
    # --- Web server
    base_url: str = _setting(
        "",
        group="Web server",
        required=True,
        example="https://files.example.com",
        doc="Public URL that links start with (no trailing slash needed).",
        check=_base_url,
    )
    bind_host: str = _setting(
        "0.0.0.0",
        group="Web server",
        example="127.0.0.1",
        doc="Address the HTTP server listens on.",
    )
    port: int = _setting(
        8080, group="Web server", example="8080", doc="TCP port of the HTTP server.", check=_port
    )
    reuse_port: bool = _setting(
        False,
        group="Web server",
        example="true",
        doc="Several StreamBot processes on this host may listen on the same PORT; the kernel spreads new connections among them (SO_REUSEPORT).",
    )
    shutdown_grace_seconds: float = _setting(
        10.0,
        group="Web server",
        example="10",
        doc="On shutdown, running downloads get this long to finish before they are cut.",
        check=_at_least(0),
    )
    http_keepalive_seconds: float = _setting(
        15.0,
        group="Web server",
        example="15",
        doc="A connection with no complete request head this long after it opened or after its last response is closed: bounds idle keep-alive connections and slowly sent headers alike.",
        check=_at_least(0.1),
    )
    max_connections_per_client: int = _setting(
        32,
        group="Web server",
        example="32",
        doc="Open connections one client address may hold; more get 503 with Retry-After and are closed (trusted proxies are exempt).",
        check=_at_least(1),
    )
    max_streams_per_client: int = _setting(
        16,
        group="Web server",
        example="16",
        doc="Concurrent downloads one client address may run (download managers open up to 16); more get 429 with Retry-After.",
        check=_at_least(1),
    )
    trusted_proxies: str = _setting(
        "",
        group="Web server",
        example="127.0.0.1, 10.0.0.0/8",
        doc="Reverse proxies (addresses or networks) whose FORWARDED_HEADER names the client for logs, per-client caps and the stream list; ignored from anyone else. Empty = none.",
        check=_networks,
    )
    forwarded_header: str = _setting(
        "X-Forwarded-For",
        group="Web server",
        example="Forwarded",
        doc="The header your proxy writes: X-Forwarded-For or Forwarded (RFC 7239). The other one is never read: the client may have sent it.",
        check=lambda v: (
            None
            if v.lower() in ("x-forwarded-for", "forwarded")
            else "must be X-Forwarded-For or Forwarded"
        ),
    )
    # --- Links
    link_secret: str = _setting(
        "",
        group="Links",
        secret=True,
        example="a-long-random-string-of-at-least-32-characters",
        doc="HMAC key of link tokens. Empty: generated once into DATA_DIR/link_secret (0600).",
        check=_link_secret,
    )
    link_ttl_hours: float = _setting(
        0.0,
        group="Links",
        example="72",
        doc="Lifetime of new links in hours; 0 = links never expire.",
        check=_at_least(0),
    )
    # --- Access
    links_per_user_per_hour: int = _setting(
        30,
        group="Access",
        example="30",
        doc="Links one user may create per hour (admins are exempt); 0 = unlimited.",
        check=_at_least(0),
    )
    admins: tuple[int, ...] = _setting(
        (),
        group="Access",
        example="11111111,22222222",
        doc="Telegram user ids of admins (comma separated).",
    )
    allowed_users: tuple[int, ...] = _setting(
        (),
        group="Access",
        example="33333333,44444444",
        doc="User ids allowed to create links; empty means everyone.",
    )
    admin_api_token: str = _setting(
        "",
        group="Access",
        secret=True,
        example="a-long-random-token-for-monitoring",
        doc="Bearer token for GET /api/fleet (Authorization: Bearer ...); empty = endpoint off (404).",
        check=lambda v: None if not v or len(v) >= 16 else "must be at least 16 characters",
    )
    metrics_token: str = _setting(
        "",
        group="Access",
        secret=True,
        example="a-long-random-token-for-prometheus",
        doc="Bearer token for GET /metrics, which shows bot ids and traffic; empty = /metrics is open to anyone who can reach the port.",
        check=lambda v: None if not v or len(v) >= 16 else "must be at least 16 characters",
    )
    # --- Fleet
    workers: int = _setting(
        4,
        group="Fleet",
        example="4",
        doc="Concurrent update handlers of the main bot.",
        check=_between(1, 64),
    )
    telegram_connect_timeout: float = _setting(
        30.0,
        group="Fleet",
        example="30",
        doc="Seconds a bot may take to connect and log in before start-up gives up on it.",
        check=_at_least(1),
    )
    login_stagger_seconds: float = _setting(
        2.0,
        group="Fleet",
        example="2",
        doc="Pause before each worker bot's first login (many logins in a row invite FloodWait); a worker with a saved session starts without it.",
        check=_at_least(0),
    )
    supervisor_check_interval_seconds: float = _setting(
        30.0,
        group="Fleet",
        example="30",
        doc="How often the supervisor pings every client.",
        check=_at_least(1),
    )
    supervisor_check_timeout_seconds: float = _setting(
        10.0,
        group="Fleet",
        example="10",
        doc="A client that does not answer its ping this fast is unhealthy and leaves the pool.",
        check=_at_least(0.1),
    )
    supervisor_max_restarts: int = _setting(
        5,
        group="Fleet",
        example="5",
        doc="Restart attempts of an unhealthy client before it is marked failed (admins are told).",
        check=_between(0, 100),
    )
    supervisor_backoff_seconds: float = _setting(
        5.0,
        group="Fleet",
        example="5",
        doc="Wait before the first restart attempt; doubles per attempt (with 10 % jitter).",
        check=_at_least(0),
    )
    supervisor_backoff_max_seconds: float = _setting(
        300.0,
        group="Fleet",
        example="300",
        doc="Longest wait between two restart attempts.",
        check=_at_least(0),
    )
    supervisor_reset_after_seconds: float = _setting(
        600.0,
        group="Fleet",
        example="600",
        doc="A client healthy this long gets its restart count reset.",
        check=_at_least(1),
    )
    supervisor_drain_seconds: float = _setting(
        30.0,
        group="Fleet",
        example="30",
        doc="Before a restart, streams get this long to move off the client; then they are cut.",
        check=_at_least(0),
    )
    supervisor_history_limit: int = _setting(
        200,
        group="Fleet",
        example="200",
        doc="Client state changes kept in memory for diagnostics (oldest dropped first).",
        check=_at_least(1),
    )
    # --- Streaming
    stream_prefetch: int = _setting(
        8,
        group="Streaming",
        example="8",
        doc="GetFile requests in flight per stream (1 = sequential, like peer bots). 8 fills the media connections of one bot and DC (MEDIA_CONNECTIONS x MEDIA_AWAITED_KIB = 8 MiB); more gains nothing unless those grow too, and `check` warns. See bench/README.md.",
        check=_between(1, 64),
    )
    stream_prefetch_start: int = _setting(
        1,
        group="Streaming",
        example="1",
        doc="Requests in flight when a stream starts; doubles per block delivered up to STREAM_PREFETCH. Players that probe and hang up then waste few requests.",
        check=_between(1, 64),
    )
    stream_memory_budget_mb: int = _setting(
        160,
        group="Streaming",
        example="160",
        doc="All streams' in-flight and buffered blocks together; windows shrink to fit, and streams that start when it is short use half blocks. At least MAX_STREAMS x STREAM_BLOCK_SIZE_KIB / 2048, so every stream can hold one block. Peak RSS is about 100 MiB + this + 0.25 MiB per stream (bench/README.md).",
        check=_at_least(1),
    )
    stream_retries: int = _setting(
        3,
        group="Streaming",
        example="3",
        doc="Network retries per block (exponential backoff) before moving to another client.",
        check=_between(0, 20),
    )
    stream_flood_sleep_seconds: float = _setting(
        5.0,
        group="Streaming",
        example="5",
        doc="FloodWaits up to this long are waited out in place; longer ones move the stream.",
        check=_at_least(0),
    )
    stream_max_wait_seconds: float = _setting(
        60.0,
        group="Streaming",
        example="60",
        doc="Longest a stream waits for a free client before the connection is cut.",
        check=_at_least(0),
    )
    stream_stall_seconds: float = _setting(
        300.0,
        group="Streaming",
        example="300",
        doc="A stream without progress this long is cancelled by the stale-stream sweep.",
        check=_at_least(1),
    )
    media_connections: int = _setting(
        4,
        group="Streaming",
        example="4",
        doc="Media connections each bot opens per Telegram DC; streams share them, least-loaded first (Telegram Desktop uses up to 8).",
        check=_between(1, 16),
    )
    media_awaited_kib: int = _setting(
        2048,
        group="Streaming",
        example="2048",
        doc="Answer bytes awaited per media connection; more requests wait before they are sent, so one slow connection cannot queue minutes of data (official clients: 512).",
        check=_between(4, 65536),
    )
    media_liveness_seconds: float = _setting(
        3.0,
        group="Streaming",
        example="3",
        doc="A media connection silent this long while answers are awaited counts as dead: its requests are sent again elsewhere at once.",
        check=_between(0.5, 60),
    )
    media_request_timeout_seconds: float = _setting(
        15.0,
        group="Streaming",
        example="15",
        doc="One GetFile on a live connection, counted from when it is sent (the queue ahead of it is bounded by MEDIA_AWAITED_KIB).",
        check=_between(1, 300),
    )
    max_streams: int = _setting(
        250,
        group="Streaming",
        example="250",
        doc="Concurrent streams; more get 503 with Retry-After. ~250 per 2 cores (bench/README.md).",
        check=_at_least(1),
    )
    max_ranges: int = _setting(
        16,
        group="Streaming",
        example="16",
        doc="Most ranges honoured in one multi-range request; more get the whole file (200).",
        check=_between(1, 1000),
    )
    stream_block_size_kib: int = _setting(
        1024,
        group="Streaming",
        example="1024",
        doc="Largest upload.GetFile request in KiB (power of two, 4..1024).",
        check=lambda v: (
            None
            if v in (4, 8, 16, 32, 64, 128, 256, 512, 1024)
            else "must be a power of two from 4 to 1024"
        ),
    )
    # --- Caches
    cache_files_limit: int = _setting(
        1024,
        group="Caches",
        example="1024",
        doc="File-info entries kept in memory (per-client locations: this times the fleet size).",
        check=_at_least(1),
    )
    cache_files_ttl: float = _setting(
        3600.0,
        group="Caches",
        example="3600",
        doc="Seconds before a file-info entry is refreshed (served stale while refreshing).",
        check=_at_least(1),
    )
    cache_guard_limit: int = _setting(
        10_000,
        group="Caches",
        example="10000",
        doc="Per-file revocation and owner facts kept in memory for download admission.",
        check=_at_least(1),
    )
    cache_guard_ttl: float = _setting(
        1.0,
        group="Caches",
        example="1",
        doc="Seconds a node trusts those facts: how long a link revoked on another node may still start downloads here.",
        check=_at_least(0),
    )
    cache_rate_limit_users: int = _setting(
        10_000,
        group="Caches",
        example="10000",
        doc="Users whose recent links are remembered for LINKS_PER_USER_PER_HOUR (least recent dropped first).",
        check=_at_least(1),
    )
    # --- Scheduler
    daily_cleanup_at: str = _setting(
        "04:00",
        group="Scheduler",
        example="04:00",
        doc="Local time of the daily jobs: old bandwidth records and old memory logs.",
        check=_daily_time,
    )
    gc_interval_seconds: float = _setting(
        3600.0,
        group="Scheduler",
        example="3600",
        doc="Garbage collection plus a memory report line in the log.",
        check=_at_least(1),
    )
    memory_check_interval_seconds: float = _setting(
        30.0,
        group="Scheduler",
        example="30",
        doc="Memory level check (alerts, load shedding, GC above GC_THRESHOLD_MB).",
        check=_at_least(1),
    )
    memory_log_interval_seconds: float = _setting(
        120.0,
        group="Scheduler",
        example="120",
        doc="A periodic line in LOG_DIR/memory_YYYYMMDD.log.",
        check=_at_least(1),
    )
    stream_sweep_interval_seconds: float = _setting(
        600.0,
        group="Scheduler",
        example="600",
        doc="Sweep of streams stalled longer than STREAM_STALL_SECONDS.",
        check=_at_least(1),
    )
    log_cache_cleanup_interval_seconds: float = _setting(
        1800.0,
        group="Scheduler",
        example="1800",
        doc="Cleanup of the log rate limiter's key cache.",
        check=_at_least(1),
    )
    cache_sweep_interval_seconds: float = _setting(
        900.0,
        group="Scheduler",
        example="900",
        doc="Sweep of long-stale file-info cache entries.",
        check=_at_least(1),
    )
    job_misfire_grace_seconds: float = _setting(
        60.0,
        group="Scheduler",
        example="60",
        doc="A job that missed its time by more than this (loop stalled, host suspended) is skipped.",
        check=_at_least(1),
    )
    scheduler_shutdown_seconds: float = _setting(
        10.0,
        group="Scheduler",
        example="10",
        doc="On shutdown, running jobs get this long to finish before they are cancelled.",
        check=_at_least(0),
    )
    # --- Memory
    memory_limit_mb: int = _setting(
        0,
        group="Memory",
        example="512",
        doc="Memory the bot may use, in MB; levels below are percentages of it. 0 = the machine's RAM.",
        check=_at_least(0),
    )
    memory_warning_percent: float = _setting(
        80.0,
        group="Memory",
        example="80",
        doc="RSS at this share of the limit is a warning; shedding stops only below it.",
        check=_between(1, 99),
    )
    memory_critical_percent: float = _setting(
        95.0,
        group="Memory",
        example="95",
        doc="RSS at this share of the limit is critical: new downloads get 503, admins are told.",
        check=_between(2, 100),
    )
    memory_retry_after_seconds: float = _setting(
        30.0,
        group="Memory",
        example="30",
        doc="Retry-After sent with the 503 while memory is critical.",
        check=_at_least(1),
    )
    gc_threshold_mb: int = _setting(
        400,
        group="Memory",
        example="400",
        doc="A garbage collection runs when RSS passes this (at most every 5 min); 0 = off.",
        check=_at_least(0),
    )
    heap_trim_quiet_seconds: float = _setting(
        5.0,
        group="Memory",
        example="5",
        doc="Once the last stream has ended and none started for this long, freed memory the C allocator still holds goes back to the system (malloc_trim; glibc only); 0 = off.",
        check=_between(0, 3600),
    )
    heap_arenas: int = _setting(
        2,
        group="Memory",
        example="2",
        doc="Most C allocator arenas (glibc M_ARENA_MAX; one per thread by default, each keeping its own freed blocks); 0 = glibc's default. MALLOC_ARENA_MAX in the environment wins.",
        check=_between(0, 64),
    )
    memory_log_keep_days: int = _setting(
        7,
        group="Memory",
        example="7",
        doc="Memory log files older than this many days are deleted by the daily cleanup.",
        check=_at_least(0),
    )
    memory_log_queue_limit: int = _setting(
        1000,
        group="Memory",
        example="1000",
        doc="Memory log lines waiting for a slow disk; beyond this new lines are dropped and counted.",
        check=_at_least(1),
    )
    # --- Bandwidth
    bandwidth_daily_limit_gb: float = _setting(
        0.0,
        group="Bandwidth",
        example="50",
        doc="Bytes the whole service may send per UTC day, in GB (10^9); 0 = unlimited.",
        check=_at_least(0),
    )
    bandwidth_monthly_limit_gb: float = _setting(
        0.0,
        group="Bandwidth",
        example="1000",
        doc="Bytes the whole service may send per UTC month, in GB; 0 = unlimited.",
        check=_at_least(0),
    )
    user_daily_limit_gb: float = _setting(
        0.0,
        group="Bandwidth",
        example="5",
        doc="Bytes downloaded per UTC day from one owner's files, in GB; 0 = unlimited.",
        check=_at_least(0),
    )
    bandwidth_flush_seconds: float = _setting(
        10.0,
        group="Bandwidth",
        example="10",
        doc="Byte counters are written to the database this often (a crash loses at most this).",
        check=_at_least(0.1),
    )
    bandwidth_pending_limit: int = _setting(
        10000,
        group="Bandwidth",
        example="10000",
        doc="Distinct counters held in memory between flushes; more trigger an early flush.",
        check=_at_least(10),
    )
    bandwidth_quota_cache_seconds: float = _setting(
        5.0,
        group="Bandwidth",
        example="5",
        doc="Quota checks reuse a total read from the database for this long; with several nodes, another node's traffic shows after at most BANDWIDTH_FLUSH_SECONDS plus this.",
        check=_at_least(0),
    )
    bandwidth_keep_days: int = _setting(
        90,
        group="Bandwidth",
        example="90",
        doc="Bandwidth records older than this many days are deleted by the daily cleanup.",
        check=_at_least(1),
    )
    # --- Logging
    data_dir: Path = _setting(
        Path("data"),
        group="Logging",
        example="/var/lib/streambot",
        doc="Sessions, SQLite database and the generated link secret live here.",
    )
    database_path: str = _setting(
        "",
        group="Logging",
        example="/srv/shared/streambot.sqlite3",
        doc="SQLite database; empty = DATA_DIR/streambot.sqlite3. Processes on this host may share it (local disk only, never a network volume); machines share DATABASE_URL.",
    )
    log_dir: Path = _setting(
        Path("logs"),
        group="Logging",
        example="/var/log/streambot",
        doc="Log files, including the daily memory log.",
    )
    log_level: str = _setting(
        "INFO", group="Logging", example="INFO", doc="Root log level.", check=_log_level
    )
    log_cache_limit: int = _setting(
        1000,
        group="Logging",
        example="1000",
        doc="Distinct messages the log rate limiter remembers (repeats are collapsed into counts).",
        check=_at_least(10),
    )
    log_rate_window_seconds: float = _setting(
        60.0,
        group="Logging",
        example="60",
        doc="A repeated log message is written once per this window, then with a count.",
        check=_at_least(1),
    )

    # ------------------------------------------------------------------ loading
    # --- Nodes
    node_role: str = _setting(
        "bot",
        group="Nodes",
        example="bot",
        doc="bot: the one node that logs in with BOT_TOKEN and talks to users (it also serves downloads). web: serves downloads only, with its own MULTI_TOKEN workers, the bot node's database (DATABASE_URL, or DATABASE_PATH on the same host) and LINK_SECRET; BOT_TOKEN is never used.",
        check=_node_role,
    )
    database_url: str = _setting(
        "",
        group="Nodes",
        secret=True,
        example="postgresql://streambot:password@db.internal:5432/streambot",
        doc="PostgreSQL shared by nodes on several machines (files, revocations, bans, bandwidth). Empty = the SQLite file. Needs LINK_SECRET.",
        check=_database_url,
    )
    database_pool_size: int = _setting(
        5,
        group="Nodes",
        example="5",
        doc="Connections this node keeps to DATABASE_URL (plus one that listens for revocations).",
        check=_between(1, 100),
    )

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str],
        *,
        require_telegram: bool = True,
        overrides: Mapping[str, Any] | None = None,
    ) -> Settings:
        """Given raw ``NAME=value`` strings, return validated settings or raise :class:`ConfigError`.

        ``require_telegram=False`` is for the demo, which runs on the simulator and needs no credentials.
        """
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        problems: list[str] = []
        invalid: set[str] = set()
        for f in dataclasses.fields(cls):
            name = f.name.upper()
            meta = f.metadata
            if f.name == "worker_tokens":
                numbered = _numbered(environ, "MULTI_TOKEN")
                for key, token in numbered:
                    if _bot_token(token):
                        problems.append(
                            f"{key} is not a bot token from @BotFather, "
                            f"e.g. {key}=123456789:AAExampleExampleExampleExampleExam"
                        )
                values[f.name] = tuple(token for _, token in numbered)
                continue
            text = environ.get(name, "").strip()
            if not text:
                # A web node never logs in as the main bot, so it needs no BOT_TOKEN.
                web_node = environ.get("NODE_ROLE", "").strip() == "web"
                if (
                    meta["required"]
                    and require_telegram
                    and not (f.name == "bot_token" and web_node)
                ):
                    problems.append(f"{name} is required, e.g. {name}={meta['example']}")
                continue
            try:
                parsed = _parse(hints[f.name], text)
            except ValueError as exc:
                shown = "" if meta["secret"] else f" (got {text!r})"
                problems.append(f"{name} {exc}{shown}, e.g. {name}={meta['example']}")
                invalid.add(f.name)
                continue
            check: Check | None = meta["check"]
            problem = check(parsed) if check else None
            if problem:
                shown = "" if meta["secret"] else f" (got {text!r})"
                fix = meta["suggest"](parsed) if meta["suggest"] else None
                hint = f"; did you mean {name}={fix}?" if fix else ""
                problems.append(f"{name} {problem}{shown}, e.g. {name}={meta['example']}{hint}")
                invalid.add(f.name)
                continue
            values[f.name] = parsed
        if overrides:
            values.update(overrides)
        problems += _cross_field_problems(cls, values, invalid)
        if problems:
            raise ConfigError(problems)
        return cls(**values)

    @classmethod
    def load(
        cls,
        env_file: Path | None = None,
        environ: Mapping[str, str] | None = None,
        *,
        require_telegram: bool = True,
        overrides: Mapping[str, Any] | None = None,
    ) -> Settings:
        """:meth:`load_checked` without the report (the demo, tests, ``memlog``)."""
        settings, _ = cls.load_checked(
            env_file, environ, require_telegram=require_telegram, overrides=overrides
        )
        return settings

    @classmethod
    def load_checked(
        cls,
        env_file: Path | None = None,
        environ: Mapping[str, str] | None = None,
        *,
        require_telegram: bool = True,
        overrides: Mapping[str, Any] | None = None,
    ) -> tuple[Settings, LoadReport]:
        """Read the env file, put the process environment on top, validate.

        Returns the settings and a :class:`LoadReport` (file read, warnings); a
        :class:`ConfigError` carries the same warnings and file.

        ``env_file=None`` means ``./config.env`` if it exists (the demo runs without one); a file
        named explicitly (``--env-file``) must exist. An empty environment variable does not wipe
        a value from the file: ``PORT= python -m streambot run`` keeps the file's PORT.
        """
        merged: dict[str, str] = {}
        path = DEFAULT_ENV_FILE if env_file is None else env_file
        source: Path | None = None
        file_names: list[str] = []
        if env_file is not None or path.exists():
            try:
                values = dotenv_values(path) if path.is_file() else None
            except OSError as exc:
                raise ConfigError([f"--env-file {path} cannot be read: {exc.strerror}"]) from None
            except UnicodeDecodeError:  # the message would quote bytes of the file: say less
                raise ConfigError([f"--env-file {path} is not UTF-8 text"]) from None
            if values is None:
                raise ConfigError([f"--env-file {path} does not exist or is not a file"])
            merged.update({k: v or "" for k, v in values.items()})
            source, file_names = path, list(values)
        env = os.environ if environ is None else environ
        merged.update({k: v for k, v in env.items() if v.strip()})
        warnings = [f"{source}: {text}" for text in unknown_names(file_names)]
        if require_telegram and not merged.get("ADMINS", "").strip():
            warnings.append(
                "ADMINS is empty: nobody can use /memory, /stats, /ban or /unban, and alerts "
                "(memory critical, a client that failed for good) reach no one; "
                "e.g. ADMINS=11111111 (your Telegram user id, from @userinfobot)"
            )
        try:
            settings = cls.from_env(merged, require_telegram=require_telegram, overrides=overrides)
        except ConfigError as exc:
            raise ConfigError(exc.problems, warnings=warnings, source=source) from None
        warnings += tuning_warnings(settings)
        return settings, LoadReport(source=source, warnings=tuple(warnings))

    @property
    def database_file(self) -> Path:
        return (
            Path(self.database_path) if self.database_path else self.data_dir / "streambot.sqlite3"
        )

    @property
    def public_base_url(self) -> str:
        base = self.base_url or f"http://{_display_host(self.bind_host)}:{self.port}"
        return base.rstrip("/")

    def __repr__(self) -> str:
        # A settings object may end up in a traceback or a debug log: never show a secret there.
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            parts.append(f"{f.name}={'***' if f.metadata['secret'] and value else value!r}")
        return f"Settings({', '.join(parts)})"


def setting_names() -> list[str]:
    """Every variable name ``config.env`` may hold (``MULTI_TOKEN1`` stands for the numbered ones)."""
    names = [f.name.upper() for f in dataclasses.fields(Settings) if f.name != "worker_tokens"]
    return [*names, "MULTI_TOKEN1"]


def unknown_names(names: Sequence[str]) -> list[str]:
    """A warning per name that is no setting, with the closest setting when one is close.

    Typos are the commonest config mistake and fail silently (the default is used), so each
    unknown name is reported; difflib's ratio finds ``ADMNS`` -> ``ADMINS``, ``BOT_TOKN`` ->
    ``BOT_TOKEN``, ``admins`` -> ``ADMINS``.
    """
    known = setting_names()
    found = []
    for name in names:
        if name in known or re.fullmatch(r"MULTI_TOKEN[0-9]+", name):
            continue
        close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.75)
        if close and close[0] == name.upper():
            hint = f"names are upper case: did you mean {close[0]}?"
        elif close:
            hint = f"did you mean {close[0]}?"
        else:
            hint = "ignored (see config.env.sample for every setting)"
        found.append(f"{name} is not a StreamBot setting; {hint}")
    return found


def tuning_warnings(settings: Settings) -> list[str]:
    """Settings that are valid but cannot do what the operator raised them for.

    A stream's read-ahead is served by the media connections of one bot and DC, which await at
    most MEDIA_CONNECTIONS x MEDIA_AWAITED_KIB of answers; requests beyond that wait in their
    queue. The wire benchmark measured prefetch 16 at the same MiB/s as 8 with the default pool
    (bench/README.md), so a larger STREAM_PREFETCH alone only holds more memory per stream.
    """
    pool_kib = settings.media_connections * settings.media_awaited_kib
    wanted_kib = settings.stream_prefetch * settings.stream_block_size_kib
    if wanted_kib <= pool_kib:
        return []
    blocks = max(1, pool_kib // settings.stream_block_size_kib)
    return [
        f"STREAM_PREFETCH ({settings.stream_prefetch}) asks for more than the media connections "
        f"carry: MEDIA_CONNECTIONS x MEDIA_AWAITED_KIB = {settings.media_connections} x "
        f"{settings.media_awaited_kib} KiB holds {blocks} blocks of STREAM_BLOCK_SIZE_KIB="
        f"{settings.stream_block_size_kib}, so the rest wait in the queue; "
        f"e.g. STREAM_PREFETCH={blocks}, or raise MEDIA_AWAITED_KIB with it"
    ]


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _numbered(environ: Mapping[str, str], prefix: str) -> list[tuple[str, str]]:
    """Given ``PREFIX1..PREFIXn`` variables, return (name, value) pairs in numeric order.

    Numeric, not lexical: MULTI_TOKEN10 comes after MULTI_TOKEN2. Gaps are allowed; empty values skipped.
    """
    found = []
    for key, value in environ.items():
        m = re.fullmatch(re.escape(prefix) + r"([0-9]+)", key)
        if m and value.strip():
            found.append((int(m.group(1)), key, value.strip()))
    return [(key, value) for _, key, value in sorted(found)]


def _parse(kind: Any, text: str) -> Any:
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError("must be an integer") from None
    if kind is float:
        try:
            number = float(text)
        except ValueError:
            raise ValueError("must be a number") from None
        if not math.isfinite(number):
            raise ValueError("must be a finite number")
        return number
    if kind is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError("must be true or false")
    if kind is Path:
        if "\0" in text:
            raise ValueError("must be a path without NUL characters")
        try:
            return Path(text).expanduser()
        except RuntimeError:  # "~someone" for a user this system does not know
            raise ValueError("must be a path whose ~user exists") from None
    if kind == tuple[int, ...]:
        try:
            return tuple(int(p) for p in re.split(r"[,\s]+", text) if p)
        except ValueError:
            raise ValueError("must be a comma-separated list of integers") from None
    return text


def load_link_secret(settings: Settings) -> tuple[bytes, bool]:
    """The link HMAC key and whether it is new: LINK_SECRET, else DATA_DIR's, else generated.

    A generated secret is *not* written yet: the store first checks it against the fingerprint
    of the secret its links were signed with (a lost DATA_DIR/link_secret must not be silently
    replaced over existing files), then :func:`save_link_secret` keeps it.
    """
    if settings.link_secret:
        return settings.link_secret.encode(), False
    path = settings.data_dir / "link_secret"
    tighten(path, FILE_MODE)  # whoever reads it can forge links
    if path.exists():
        value = path.read_text().strip()
        if len(value) >= 32:
            return value.encode(), False
    return secrets.token_urlsafe(48).encode(), True


def save_link_secret(settings: Settings, secret: bytes) -> None:
    """Keep a generated secret in DATA_DIR (atomically, mode 0600) so links survive restarts."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(settings.data_dir / "link_secret", secret + b"\n", mode=0o600)


def ensure_link_secret(settings: Settings) -> bytes:
    """The link secret, a generated one saved at once (for tools that have no store to ask)."""
    secret, fresh = load_link_secret(settings)
    if fresh:
        save_link_secret(settings, secret)
    return secret


def render_sample() -> str:
    """The text of ``config.env.sample``: every setting, grouped, with its default and an example."""
    lines = [
        "# StreamBot configuration. Copy to config.env and fill in the Telegram group.",
        "# Every line below shows the default; the process environment overrides this file.",
        "",
    ]
    fields = dataclasses.fields(Settings)
    for group in GROUPS:
        members = [f for f in fields if f.metadata["group"] == group]
        if not members:
            continue
        lines.append(f"# ===== {group} " + "=" * max(0, 60 - len(group)))
        for f in members:
            meta = f.metadata
            lines.append(f"# {meta['doc']}")
            if f.name == "worker_tokens":
                lines.append(f"# example: {meta['example']}")
                lines.append("# MULTI_TOKEN1=")
                lines.append("")
                continue
            name = f.name.upper()
            required = " (required)" if meta["required"] else ""
            lines.append(f"# example: {name}={meta['example']}{required}")
            default = "" if meta["required"] else _format_default(f.default)
            lines.append(f"{name}={default}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _format_default(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
