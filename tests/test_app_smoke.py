"""The application starts on the simulator, serves a plain GET byte-exact, and stops cleanly."""

from __future__ import annotations

from streambot.simulator import SyntheticContent
from streambot.simulator.content import synthetic_bytes

from .conftest import StartApp


async def test_plain_get_is_byte_exact(world, start_app: StartApp) -> None:
    """A plain GET of a stored 3 MiB + 5 byte file returns exactly its bytes."""
    f, msg_id = world.store(SyntheticContent(3 * 1024 * 1024 + 5, seed=7), name="a.bin")
    app = await start_app(world)
    resp = await app.client.get(app.dl_path(msg_id, "a.bin"))
    assert resp.status == 200
    body = await resp.read()
    assert body == synthetic_bytes(7, 0, f.size)
    assert resp.headers["Content-Length"] == str(f.size)
