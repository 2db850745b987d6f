"""TL on the server side: requests read by their types, answers written as Telegram writes them.

pyrogram's generated readers were written for a client. A boxed vector (``Vector<InputMessage>``)
is read with no element type, and :class:`pyrogram.raw.core.Vector` then *guesses* the element
type from the bytes left in the buffer: 8 bytes per element reads as ``long``, 4 as ``int``. A client
never meets that case in an answer it cares about; a server does: ``channels.getMessages`` with
``[inputMessageID(id)]`` (8 bytes each) comes out as a list of longs. In every generated reader an
untyped vector is a vector of boxed objects, so while the server parses, such vectors are read as
boxed objects: no guessing. The switch is a context variable, so a pyrogram client running in the
same process (tests) keeps the library's own behaviour.
"""

from __future__ import annotations

import contextvars
import gzip
from io import BytesIO
from typing import Any

from pyrogram import raw
from pyrogram.raw.all import objects
from pyrogram.raw.core import TLObject
from pyrogram.raw.core.list import List
from pyrogram.raw.core.primitives import Bool, Bytes, Int, Long, Vector

RPC_RESULT_ID = 0xF35C6D01
GZIP_PACKED_ID = 0x3072CFA1
MSG_CONTAINER_ID = 0x73F1F8DC
#: Answers larger than this are sent gzip_packed, as Telegram does; file bytes never are.
GZIP_THRESHOLD = 512

_server_side: contextvars.ContextVar[bool] = contextvars.ContextVar("tl_server_side", default=False)


class _TypedVector(Vector):
    """``Vector`` that reads untyped (boxed) elements as objects while the server parses."""

    @classmethod
    def read(cls, data: BytesIO, t: Any = None, *args: Any) -> List:
        if t is not None or not _server_side.get():
            return Vector.read(data, t, *args)
        count = Int.read(data)
        return List(TLObject.read(data) for _ in range(count))


def _install() -> None:
    # Idempotent; identical to pyrogram's own reader whenever the flag is off. (pyrogram.raw
    # replaces the map's class names by the classes at import: the map holds classes here.)
    table: dict[int, Any] = objects
    if table.get(Vector.ID) is Vector:
        table[Vector.ID] = _TypedVector


_install()


def read_object(data: bytes) -> Any:
    """One TL object sent by a client, read by its types (``gzip_packed`` is unwrapped)."""
    token = _server_side.set(True)
    try:
        return TLObject.read(BytesIO(data))
    finally:
        _server_side.reset(token)


def write_result(result: Any) -> bytes:
    """A world answer in its TL form: objects, ``Bool`` or a boxed vector of objects."""
    if isinstance(result, bool):
        return bytes(Bool(result))
    if isinstance(result, list):
        return Int(Vector.ID, False) + Int(len(result)) + b"".join(x.write() for x in result)
    data: bytes = result.write()
    return data


def rpc_result(req_msg_id: int, body: bytes, *, compress: bool = True) -> bytes:
    """``rpc_result``; a large body is wrapped in ``gzip_packed`` like Telegram's answers."""
    if compress and len(body) > GZIP_THRESHOLD:
        body = Int(GZIP_PACKED_ID, False) + Bytes(gzip.compress(body, compresslevel=6))
    return Int(RPC_RESULT_ID, False) + Long(req_msg_id) + body


def rpc_error(req_msg_id: int, code: int, message: str) -> bytes:
    error = raw.types.RpcError(error_code=code, error_message=message)
    return Int(RPC_RESULT_ID, False) + Long(req_msg_id) + error.write()


def container(messages: list[tuple[int, int, bytes]]) -> bytes:
    """``msg_container`` of (msg_id, seq_no, body) messages."""
    out = [Int(MSG_CONTAINER_ID, False), Int(len(messages))]
    for msg_id, seq_no, body in messages:
        out += [Long(msg_id), Int(seq_no), Int(len(body)), body]
    return b"".join(out)


def method_name(query: TLObject[Any]) -> str:
    """``channels.GetMessages`` for ``pyrogram.raw.functions.channels.GetMessages``."""
    return ".".join(query.QUALNAME.split(".")[1:])
