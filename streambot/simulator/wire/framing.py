"""MTProto TCP transports, server side: abridged and intermediate framing.

The client announces its transport with the first bytes of the connection (``0xef`` abridged,
``0xeeeeeeee`` intermediate). Encoding is pure; reading takes an ``asyncio.StreamReader``. The padded
and obfuscated variants pyrogram uses only behind MTProto proxies are not served.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Literal

ABRIDGED_TAG = b"\xef"
INTERMEDIATE_TAG = b"\xee\xee\xee\xee"
#: A client packet larger than this is a protocol error (Telegram's own limit is about 1 MiB).
MAX_PACKET = 4 << 20

Transport = Literal["abridged", "intermediate"]


class FramingError(Exception):
    """The client sent something that is not a packet of a known MTProto transport."""


@dataclass(frozen=True, slots=True)
class Framing:
    transport: Transport

    def encode(self, payload: bytes) -> bytes:
        """One packet as it goes on the wire (payload length is a multiple of 4)."""
        if self.transport == "abridged":
            words = len(payload) // 4
            head = bytes([words]) if words < 0x7F else b"\x7f" + words.to_bytes(3, "little")
            return head + payload
        return struct.pack("<I", len(payload)) + payload

    async def read(self, reader: asyncio.StreamReader) -> bytes:
        """The next packet's payload (raises ``IncompleteReadError`` at end of stream)."""
        if self.transport == "abridged":
            words = (await reader.readexactly(1))[0]
            if words >= 0x7F:
                words = int.from_bytes(await reader.readexactly(3), "little")
            length = words * 4
        else:
            length = struct.unpack("<I", await reader.readexactly(4))[0] & 0x7FFFFFFF
        if length > MAX_PACKET:
            raise FramingError(f"packet of {length} bytes")
        return await reader.readexactly(length)


async def accept(reader: asyncio.StreamReader) -> Framing:
    """Read the transport tag a client opens its connection with."""
    first = await reader.readexactly(1)
    if first == ABRIDGED_TAG:
        return Framing("abridged")
    tag = first + await reader.readexactly(3)
    if tag == INTERMEDIATE_TAG:
        return Framing("intermediate")
    raise FramingError(f"unknown transport tag {tag.hex()}")


def transport_error(framing: Framing, code: int) -> bytes:
    """A transport error (e.g. -404: auth key not found) as the 4-byte packet clients expect."""
    return framing.encode(struct.pack("<i", code))
