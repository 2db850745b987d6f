"""Service endpoints: health, readiness, Prometheus metrics and public info."""

from __future__ import annotations

import time

from aiohttp import web

import streambot
from streambot import keys
from streambot.metrics import CONTENT_TYPE_LATEST


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and its event loop answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when at least one Telegram client is healthy (the web server obviously answers)."""
    healthy = request.app[keys.FLEET].healthy_count()
    status = 200 if healthy else 503
    return web.json_response({"ready": bool(healthy), "healthy_clients": healthy}, status=status)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[keys.METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def info(request: web.Request) -> web.Response:
    """Public facts only: no memory figures, no secrets."""
    app = request.app
    fleet = app[keys.FLEET]
    return web.json_response(
        {
            "name": "StreamBot",
            "version": streambot.__version__,
            "uptime_seconds": round(time.time() - app[keys.STARTED_AT]),
            "fleet_size": len(fleet.clients),
            "healthy_clients": fleet.healthy_count(),
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/info", info)
