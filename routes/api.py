"""Service endpoints: health, readiness, Prometheus metrics, public info and the admin fleet view.

``/api/info`` is public, so it carries no memory figures, no client names and nothing secret.
``/api/fleet`` needs ``Authorization: Bearer <ADMIN_API_TOKEN>``; a missing or wrong token gets
401. Without ADMIN_API_TOKEN configured the endpoint answers 404, as if it did not exist: there is
then no token that could be right, and a public instance need not advertise an admin surface.
``/metrics`` is open by default (scrapers usually sit on a private network); with ``METRICS_TOKEN``
set it needs ``Authorization: Bearer <METRICS_TOKEN>`` too, since it shows bot ids and traffic.
"""

from __future__ import annotations

import hmac
import time

from aiohttp import web

import streambot
from routes import keys
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
    """Prometheus text; behind ``METRICS_TOKEN`` when one is set (it names bots, shows traffic)."""
    expected = request.app[keys.SETTINGS].metrics_token
    if expected and not _token_matches(request, expected):
        return _unauthorized("A valid metrics token is required.")
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
            "features": {
                "range_requests": True,
                "multipart_ranges": app[keys.SETTINGS].max_ranges > 1,
                "watch_page": any(
                    r.canonical.startswith("/watch/") for r in app.router.resources()
                ),
                "expiring_links": app[keys.SETTINGS].link_ttl_hours > 0,
            },
        }
    )


def _bearer_token(request: web.Request) -> bytes | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip().encode("utf-8", "surrogateescape")


def _token_matches(request: web.Request, expected: str) -> bool:
    given = _bearer_token(request)
    # compare_digest: the time taken must not tell how much of a guessed token was right.
    return given is not None and hmac.compare_digest(given, expected.encode())


def _unauthorized(reason: str) -> web.Response:
    return web.Response(
        status=401, text=reason + "\n", headers={"WWW-Authenticate": 'Bearer realm="streambot"'}
    )


async def fleet_status(request: web.Request) -> web.Response:
    """Per-client state for monitoring; admin bearer token only."""
    app = request.app
    expected = app[keys.SETTINGS].admin_api_token
    if not expected:
        return web.Response(status=404, text="Not found.\n")
    if not _token_matches(request, expected):
        return _unauthorized("A valid admin token is required.")
    fleet = app[keys.FLEET]
    supervisor = app[keys.SUPERVISOR]
    return web.json_response(
        {
            "healthy_clients": fleet.healthy_count(),
            "clients": fleet.snapshot(),
            "supervisor": supervisor.snapshot() if supervisor is not None else None,
        },
        headers={"Cache-Control": "no-store"},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/info", info)
    app.router.add_get("/api/fleet", fleet_status)
