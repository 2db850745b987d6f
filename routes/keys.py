"""Typed keys of the aiohttp application: how handlers reach the objects ``streambot/app.py`` built.

Each key carries the type of what it holds, so ``request.app[FLEET]`` is a ``Fleet`` to a type
checker, not ``Any``. They live with the routes (their readers); the composition root imports
them to fill the application in.
"""

from __future__ import annotations

from aiohttp import web

from streambot.admission import Admission
from streambot.catalog import Catalog
from streambot.config import Settings
from streambot.fleet import Fleet
from streambot.metrics import Metrics
from streambot.streamer import Streamer
from streambot.supervisor import Supervisor
from utils.stream_cleanup import StreamRegistry

__all__ = [
    "ADMISSION",
    "CATALOG",
    "FLEET",
    "LINK_SECRET",
    "METRICS",
    "REGISTRY",
    "SETTINGS",
    "STARTED_AT",
    "STREAMER",
    "SUPERVISOR",
]

SETTINGS = web.AppKey("settings", Settings)
LINK_SECRET = web.AppKey("link_secret", bytes)
FLEET = web.AppKey("fleet", Fleet)
CATALOG = web.AppKey("catalog", Catalog)
STREAMER = web.AppKey("streamer", Streamer)
REGISTRY = web.AppKey("registry", StreamRegistry)
METRICS = web.AppKey("metrics", Metrics)
#: Admission checks run before a download starts (memory pressure, quotas); each may raise.
ADMISSION: web.AppKey[list[Admission]] = web.AppKey("admission")
STARTED_AT = web.AppKey("started_at", float)
SUPERVISOR = web.AppKey("supervisor", Supervisor)
