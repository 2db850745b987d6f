"""The one seam between pyrogram and the simulator: a real ``Session`` whose transport is in-process.

Only ``start``, ``stop`` and ``send`` are replaced. ``Session.invoke`` (FloodWait sleeping, retries on
network errors), ``Client.invoke``, ``get_session`` and the dispatcher stay the library's own code.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from io import BytesIO
from typing import Any, ClassVar

import pyrogram.client
from pyrogram.session import Auth, Session

from streambot.simulator.telegram import SimulatedTelegram


class SimSession(Session):
    """pyrogram Session answered by a :class:`SimulatedTelegram` instead of a TCP connection."""

    telegram: ClassVar[SimulatedTelegram]

    async def start(self) -> None:
        self.telegram.attach(self)
        self.is_started.set()

    async def stop(self) -> None:
        self.is_started.clear()
        self.telegram.detach(self)

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def send(self, data: Any, wait_response: bool = True, timeout: float = 0) -> Any:
        return await self.telegram.handle(self, data)


class SimAuth:
    """Replaces the DH key exchange: a random key, as if Telegram had agreed to it.

    With ``telegram.garbled_handshake`` set, the first answer is junk instead (what a proxy or
    firewall that intercepts the connection sends back), read by pyrogram's own ``Auth.unpack``.
    """

    telegram: ClassVar[SimulatedTelegram]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def create(self) -> bytes:
        if self.telegram.garbled_handshake:
            Auth.unpack(BytesIO(bytes(64)))
        return os.urandom(256)


@contextlib.contextmanager
def offline(telegram: SimulatedTelegram) -> Iterator[SimulatedTelegram]:
    """Route every pyrogram client created inside this block to ``telegram``.

    pyrogram builds sessions through the module-level names ``Session`` and ``Auth`` in
    ``pyrogram.client``; swapping those two names is the whole installation.
    """
    bound = type("BoundSimSession", (SimSession,), {"telegram": telegram})
    auth = type("BoundSimAuth", (SimAuth,), {"telegram": telegram})
    # Through the module's namespace: SimAuth only quacks like pyrogram's Auth (it has no
    # base class there), so a typed attribute assignment would not describe what happens.
    names = vars(pyrogram.client)
    saved = {"Session": names["Session"], "Auth": names["Auth"]}
    names.update(Session=bound, Auth=auth)
    try:
        yield telegram
    finally:
        names.update(saved)
