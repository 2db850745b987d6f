"""No 500 from any input (issue 16 item 6): links that verify but name impossible messages."""

from __future__ import annotations

import pytest

from streambot.simulator import SyntheticContent
from streambot.simulator.world import World

from .helpers import StartApp


@pytest.mark.parametrize("message_id", [2**31, 2**31 + 5, 2**40, 2**63 - 1])
async def test_signed_token_for_out_of_range_message_id_is_404(
    world: World, start_app: StartApp, message_id: int
) -> None:
    """Telegram message ids are 32-bit; a larger one was a 500 (pyrogram's OverflowError)."""
    world.store(SyntheticContent(10, seed=1), name="a.txt")
    app = await start_app(world)
    lookups = world.telegram.count("channels.GetMessages")  # start-up checks the channel
    for method in ("GET", "HEAD"):
        resp = await app.client.request(method, app.dl_path(message_id, "a.txt"))
        assert resp.status == 404
    resp = await app.client.get(app.dl_path(message_id, "a.txt").replace("/dl/", "/watch/", 1))
    assert resp.status == 404
    assert world.telegram.count("channels.GetMessages") == lookups
