"""Plan Telegram ``upload.GetFile`` requests for an inclusive byte range of a file.

Telegram's rules for ``upload.GetFile(offset, limit)`` (non-precise mode):

* ``offset % 4096 == 0`` and ``limit % 4096 == 0``;
* ``1048576 % limit == 0``, so ``limit`` is a power of two from 4 KiB to 1 MiB;
* a request must not cross a 1 MiB boundary:
  ``offset // 2**20 == (offset + limit - 1) // 2**20``.

``offset`` need not be a multiple of ``limit``. Near the end of the file the server returns
fewer bytes than ``limit`` (and nothing past the end).

Strategy: split the range into 1 MiB windows; inside each window request the *smallest*
aligned power-of-two block that covers the needed bytes. Small probes (Safari's
``bytes=0-1``, players reading a header or the moov atom) then cost one 4 KiB request, while
fully covered windows -- the bulk of any real stream -- get a single 1 MiB request, the
fewest round trips Telegram allows. Every request stays inside its window, so nothing past
the window holding ``end`` is ever fetched.

The window and minimum sizes are parameters so the logic can be exercised with tiny blocks
on tiny data; production code uses the defaults. Pure and stdlib-only.
"""

from __future__ import annotations

from dataclasses import dataclass

from streambot.units import MIB

__all__ = [
    "TELEGRAM_MIN_BLOCK",
    "Block",
    "ShortRead",
    "plan_blocks",
    "telegram_rule_violation",
    "trim",
]

TELEGRAM_MIN_BLOCK = 4096


class ShortRead(ValueError):
    """Telegram returned fewer bytes than the plan needs from a block.

    Planned blocks never reach past the requested range's last byte, which the caller has
    clamped to the file size, so a short response means the file changed or the server
    misbehaved. The caller must abort the response: sending a body shorter than the
    promised Content-Length would corrupt the client's download.
    """

    def __init__(self, block: Block, got: int) -> None:
        super().__init__(
            f"short read at offset {block.offset}: got {got} bytes, "
            f"need {block.skip + block.take} (skip {block.skip} + take {block.take})"
        )
        self.block = block
        self.got = got


@dataclass(frozen=True, slots=True)
class Block:
    """One ``upload.GetFile(offset, limit)`` request and which part of its answer to keep."""

    offset: int
    limit: int
    skip: int  # bytes to drop from the front of the response
    take: int  # bytes to keep after skip

    def __post_init__(self) -> None:
        # Cheap guard that a hand-built block is internally consistent.
        if self.offset < 0 or self.limit <= 0 or self.skip < 0 or self.take <= 0:
            raise ValueError(f"invalid block {self!r}")
        if self.skip + self.take > self.limit:
            raise ValueError(f"block keeps bytes past its limit: {self!r}")


def plan_blocks(
    start: int,
    end: int,
    size: int,
    *,
    max_block: int = MIB,
    min_block: int = TELEGRAM_MIN_BLOCK,
) -> list[Block]:
    """Return the requests, in file order, that together yield bytes ``start..end`` inclusive.

    ``max_block`` is both the largest request and the window no request may cross;
    ``min_block`` is the smallest request and the alignment unit. Callers clamp the range to
    the file first: ``end >= size`` (and so ``size == 0``) is a ``ValueError``, as are
    non-power-of-two block sizes, ``min_block > max_block``, ``start < 0`` and ``end < start``.
    """
    if not _is_power_of_two(max_block):
        raise ValueError(f"max_block must be a power of two, got {max_block!r}")
    if not _is_power_of_two(min_block):
        raise ValueError(f"min_block must be a power of two, got {min_block!r}")
    if min_block > max_block:
        raise ValueError(f"min_block {min_block} > max_block {max_block}")
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if end < start:
        raise ValueError(f"end {end} < start {start}")
    if end >= size:
        raise ValueError(f"end {end} is past the last byte of a {size}-byte file")

    blocks: list[Block] = []
    for window in range(start // max_block, end // max_block + 1):
        window_start = window * max_block
        a = max(start, window_start)
        b = min(end, window_start + max_block - 1)
        # Smallest aligned power-of-two block holding [a, b]; terminates at max_block at
        # the latest because a and b lie in the same window.
        limit = min_block
        while a // limit != b // limit:
            limit *= 2
        offset = a // limit * limit
        blocks.append(Block(offset=offset, limit=limit, skip=a - offset, take=b - a + 1))
    return blocks


def telegram_rule_violation(
    offset: int,
    limit: int,
    *,
    max_block: int = MIB,
    min_block: int = TELEGRAM_MIN_BLOCK,
) -> str | None:
    """Return the RPC error Telegram would give ``GetFile(offset, limit)``, or ``None`` if valid.

    Crossing a window boundary is reported as ``LIMIT_INVALID``: the offset alone is fine,
    it is the limit that is too large for it. The keyword parameters default to Telegram's
    real constants and exist so plans made with tiny test blocks can be checked the same way.
    """
    if offset < 0 or offset % min_block:
        return "OFFSET_INVALID"
    if limit <= 0 or limit % min_block or max_block % limit:
        return "LIMIT_INVALID"
    if offset // max_block != (offset + limit - 1) // max_block:
        return "LIMIT_INVALID"
    return None


def trim(block: Block, data: bytes) -> bytes | memoryview:
    """Return the ``take`` bytes of ``data`` (the response to ``block``) after ``skip``.

    A whole response is returned as-is; otherwise a zero-copy memoryview, since a trimmed
    1 MiB block would be copied only to be written to the socket. Extra bytes at the end
    are ignored; too few raise :class:`ShortRead`.
    """
    stop = block.skip + block.take
    if len(data) < stop:
        raise ShortRead(block, len(data))
    if block.skip == 0 and len(data) == stop:
        return data
    return memoryview(data)[block.skip : stop]


def _is_power_of_two(value: object) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value > 0
        and value & (value - 1) == 0
    )
