"""Point pyrogram at a wire simulator: its DC addresses and its RSA key, for one scope only.

kurigram has no DC address table to edit: a new session starts at a hard-coded Telegram address
(``Client.load_session``), session files remember the address they were made with, and other DCs
come from ``help.getConfig``. So the one place that sees every address is ``Connection``: inside
:func:`pointed_at`, a connection to an address that is not one of the simulator's goes to the
simulator's port for that DC (the media port for media connections; when only the main ports
are known, media connections keep the address ``help.getConfig`` gave them). The simulator's RSA key is
added to ``pyrogram.crypto.rsa.server_public_keys`` so the key exchange trusts it. Both are undone
on exit. A plain ``run`` never enters this.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Mapping
from typing import Any

from pyrogram.connection import connection as connection_module
from pyrogram.crypto import rsa as pyrogram_rsa

from streambot.simulator.wire.rsa import PublicKeyNumbers

Address = tuple[str, int]


def route(
    dc_id: int,
    address: Address,
    media: bool,
    dcs: Mapping[int, Address],
    media_dcs: Mapping[int, Address],
) -> Address:
    """Where a connection to ``address`` for ``dc_id`` goes while pointed at a simulator.

    Without ``media_dcs``, a media connection to a simulator host is trusted as is: media
    addresses only ever come from the simulator's own (fresh) ``help.getConfig``.
    """
    if address in set(dcs.values()) | set(media_dcs.values()):
        return address  # already one of the simulator's (from its help.getConfig)
    if media:
        if dc_id in media_dcs:
            return media_dcs[dc_id]
        if not media_dcs and address[0] in {host for host, _ in dcs.values()}:
            return address
    return dcs.get(dc_id, address)


@contextlib.contextmanager
def pointed_at(
    dcs: Mapping[int, Address],
    rsa_public_pem: str,
    *,
    media_dcs: Mapping[int, Address] | None = None,
) -> Iterator[None]:
    """Route every pyrogram connection opened inside this block to the simulator's ports."""
    cls: Any = connection_module.Connection
    original_init = cls.__init__
    signature = inspect.signature(original_init)
    main = {int(dc): (host, int(port)) for dc, (host, port) in dcs.items()}
    media = {int(dc): (host, int(port)) for dc, (host, port) in (media_dcs or {}).items()}

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        params = bound.arguments
        host, port = route(
            params["dc_id"],
            (params["server_address"], params["port"]),
            bool(params["media"]),
            main,
            media,
        )
        params["server_address"], params["port"] = host, port
        original_init(*bound.args, **bound.kwargs)

    key = PublicKeyNumbers.from_pem(rsa_public_pem)
    had_key = key.fingerprint in pyrogram_rsa.server_public_keys
    cls.__init__ = init
    if not had_key:
        pyrogram_rsa.server_public_keys[key.fingerprint] = pyrogram_rsa.PublicKey(
            key.modulus, key.exponent
        )
    try:
        yield
    finally:
        cls.__init__ = original_init
        if not had_key:
            pyrogram_rsa.server_public_keys.pop(key.fingerprint, None)
