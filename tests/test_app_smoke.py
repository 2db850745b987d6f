"""The application starts on the simulator, serves a plain GET byte-exact, and stops cleanly."""

from __future__ import annotations

from streambot.simulator import SyntheticContent
from streambot.simulator.content import synthetic_bytes

from .helpers import StartApp


async def test_plain_get_is_byte_exact(world, start_app: StartApp) -> None:
    """A plain GET of a stored 3 MiB + 5 byte file returns exactly its bytes."""
    f, msg_id = world.store(SyntheticContent(3 * 1024 * 1024 + 5, seed=7), name="a.bin")
    app = await start_app(world)
    resp = await app.client.get(app.dl_path(msg_id, "a.bin"))
    assert resp.status == 200
    body = await resp.read()
    assert body == synthetic_bytes(7, 0, f.size)
    assert resp.headers["Content-Length"] == str(f.size)


async def test_lifecycle_is_marked_in_the_memory_log(tmp_path, start_app: StartApp) -> None:
    """Start-up, each client start, the web server start and shutdown appear in the memory log."""
    from streambot.memlog import parse_line
    from streambot.simulator.world import build_world

    world = build_world(workers=1)
    app = await start_app(world)
    await app.client.close()
    logs = sorted((tmp_path / "logs").glob("memory_*.log"))
    assert logs
    lines = [parse_line(t) for p in logs for t in p.read_text().splitlines()]
    marks = [(line.kind, line.task) for line in lines if line is not None]
    names = [fc.name for fc in app.services.fleet.clients]
    for expected in [
        (">>>", "Startup"),
        (">>>", "Fleet start"),
        (">>>", f"Client start {names[0]}"),
        ("<<<", f"Client start {names[1]}"),
        (">>>", "Web server start"),
        (">>>", "Shutdown"),
        ("<<<", "Shutdown"),
    ]:
        assert expected in marks
    assert marks.index((">>>", "Startup")) < marks.index((">>>", "Web server start"))
    assert marks[-1] == ("<<<", "Shutdown")
