"""HTTP side of operations: /api/info, /healthz, /readyz, /api/fleet, and load shedding at critical memory."""

from __future__ import annotations

from streambot.fleet import ClientState
from streambot.simulator import SyntheticContent
from streambot.simulator.content import synthetic_bytes
from streambot.simulator.world import World
from streambot.units import MIB

from .helpers import LINK_SECRET, FakeProcess, StartApp

TOKEN = "admin-token-0123456789abcdef"


async def test_info_has_public_facts_only(world: World, start_app: StartApp) -> None:
    """/api/info gives name, version, uptime, fleet size and features; no memory, no secrets."""
    app = await start_app(world, admin_api_token=TOKEN)
    resp = await app.client.get("/api/info")
    assert resp.status == 200
    body = await resp.text()
    data = await resp.json()
    assert set(data) == {
        "name",
        "version",
        "uptime_seconds",
        "fleet_size",
        "healthy_clients",
        "features",
    }
    assert data["name"] == "StreamBot"
    assert data["fleet_size"] == 1
    assert data["features"]["range_requests"] is True
    assert isinstance(data["features"]["watch_page"], bool)
    for secret in (TOKEN, app.settings.bot_token, app.settings.api_hash, LINK_SECRET.decode()):
        assert secret not in body
    for memory_word in ("rss", "vms", "memory", "MB"):
        assert memory_word not in body


async def test_healthz_and_readyz(world: World, start_app: StartApp) -> None:
    """/healthz answers while alive; /readyz is 503 once no client is healthy, 200 again after."""
    app = await start_app(world, supervisor_check_interval_seconds=3600)
    assert (await app.client.get("/healthz")).status == 200
    ready = await app.client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["healthy_clients"] == 1

    supervisor = app.services.supervisor
    assert supervisor is not None
    world.telegram.set_offline(world.main_bot)
    states = await supervisor.check_all()
    assert states[app.services.fleet.main.name] is not ClientState.HEALTHY
    not_ready = await app.client.get("/readyz")
    assert not_ready.status == 503
    assert (await not_ready.json()) == {"ready": False, "healthy_clients": 0}
    assert (await app.client.get("/healthz")).status == 200


async def test_fleet_is_404_without_a_configured_token(world: World, start_app: StartApp) -> None:
    """With no ADMIN_API_TOKEN the admin endpoint does not exist, whatever is sent."""
    app = await start_app(world)
    assert (await app.client.get("/api/fleet")).status == 404
    resp = await app.client.get("/api/fleet", headers={"Authorization": "Bearer "})
    assert resp.status == 404


async def test_fleet_needs_the_admin_bearer_token(world: World, start_app: StartApp) -> None:
    """No token, a wrong token or another scheme get 401; the right token gets per-client state."""
    app = await start_app(world, admin_api_token=TOKEN)
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ):
        resp = await app.client.get("/api/fleet", headers=headers)
        assert resp.status == 401, headers
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert TOKEN not in await resp.text()

    resp = await app.client.get("/api/fleet", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    data = await resp.json()
    assert data["healthy_clients"] == 1
    [client] = data["clients"]
    assert client["state"] == "healthy"
    assert client["role"] == "main"
    assert data["supervisor"]["max_restarts"] == 5
    assert TOKEN not in await resp.text()


async def test_critical_memory_sheds_downloads_until_below_warning(
    world: World, start_app: StartApp
) -> None:
    """At critical RSS downloads get 503 + Retry-After until RSS is below warning; admins told once."""
    f, msg_id = world.store(SyntheticContent(5000, seed=2), name="a.bin")
    app = await start_app(world, memory_limit_mb=100, memory_retry_after_seconds=17)
    tg = world.telegram
    await tg.send_user_message(world.admin, world.main_bot, text="/start")
    await tg.wait_replies(world.admin, 1)
    manager = app.services.memory
    assert manager is not None
    process = FakeProcess(rss=50 * MIB)
    manager.process = process
    path = app.dl_path(msg_id, "a.bin")

    assert (await app.client.get(path)).status == 200
    process.rss = 96 * MIB
    for _ in range(3):
        resp = await app.client.get(path)
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "17"
        assert "low on memory" in await resp.text()
    process.rss = 85 * MIB  # warning: still shedding (hysteresis)
    assert (await app.client.get(path)).status == 503
    process.rss = 70 * MIB
    resp = await app.client.get(path)
    assert resp.status == 200
    assert await resp.read() == synthetic_bytes(2, 0, f.size)

    await manager.close()  # wait for the alert in flight
    replies = tg.replies(world.admin)
    alerts = [r.text for r in replies if "Memory critical" in r.text]
    assert len(alerts) == 1
    assert "96 MB of 100 MB" in alerts[0]
