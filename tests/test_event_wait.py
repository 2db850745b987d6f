"""wait_set: an event with a deadline answers True or False, never raises TimeoutError."""

from __future__ import annotations

import asyncio

from streambot.event_wait import wait_set


async def test_already_set_is_true_even_with_no_time() -> None:
    event = asyncio.Event()
    event.set()
    assert await wait_set(event, 0)


async def test_set_while_waiting_is_true() -> None:
    event = asyncio.Event()
    asyncio.get_running_loop().call_soon(event.set)
    assert await wait_set(event, 60)


async def test_never_set_is_false_after_the_deadline() -> None:
    assert not await wait_set(asyncio.Event(), 0.01)
