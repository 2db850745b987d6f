"""Tests for streambot.blocks: planning Telegram GetFile requests for byte ranges."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streambot.blocks import (
    TELEGRAM_MIN_BLOCK,
    Block,
    ShortRead,
    plan_blocks,
    telegram_rule_violation,
    trim,
)
from streambot.units import MIB

# Tiny geometry: the same logic on data small enough to hold in memory for every example.
TINY_MAX = 64
TINY_MIN = 16
REAL = pytest.param(MIB, TELEGRAM_MIN_BLOCK, id="real")
TINY = pytest.param(TINY_MAX, TINY_MIN, id="tiny")

# File contents are a pseudo-random pattern with a prime period: unlike a period-256
# pattern, shifting by any power-of-two block size (a typical off-by-a-block bug) changes
# the bytes, and any slice of a "50 MiB file" is built from the pattern on demand.
_PERIOD = 65_521
_PATTERN = random.Random(20240601).randbytes(_PERIOD)


def file_bytes(lo: int, hi: int, size: int) -> bytes:
    """Bytes lo..hi-1 of a synthetic file of `size` bytes, short past the end like Telegram."""
    hi = min(hi, size)
    if lo >= hi:
        return b""
    start = lo % _PERIOD
    reps = (start + hi - lo) // _PERIOD + 1
    return (_PATTERN * reps)[start : start + hi - lo]


def fetch(block: Block, size: int) -> bytes:
    """What Telegram returns for the block: the file's bytes, cut short at the end."""
    return file_bytes(block.offset, block.offset + block.limit, size)


def assert_telegram_ok(block: Block, max_block: int, min_block: int) -> None:
    """Independent restatement of Telegram's GetFile rules (not the module's checker)."""
    assert block.offset >= 0
    assert block.offset % min_block == 0, block
    assert block.limit % min_block == 0, block
    assert max_block % block.limit == 0, block
    assert block.offset // max_block == (block.offset + block.limit - 1) // max_block, block


def check_plan(
    plan: list[Block], start: int, end: int, size: int, max_block: int, min_block: int
) -> None:
    """Assert every structural property a plan for [start, end] must have."""
    assert plan, "a non-empty range needs at least one request"
    windows = end // max_block - start // max_block + 1
    assert len(plan) == windows
    assert sum(b.limit for b in plan) <= windows * max_block
    for block in plan:
        assert_telegram_ok(block, max_block, min_block)
        assert (
            telegram_rule_violation(
                block.offset, block.limit, max_block=max_block, min_block=min_block
            )
            is None
        )
        # Never start (or reach) past the window that holds `end`.
        assert block.offset // max_block <= end // max_block
        assert (block.offset + block.limit - 1) // max_block <= end // max_block
        # The limit is minimal: half of it would not cover the kept bytes in one aligned block.
        a = block.offset + block.skip
        b = a + block.take - 1
        if block.limit > min_block:
            half = block.limit // 2
            assert a // half != b // half, block
    for prev, nxt in itertools.pairwise(plan):
        assert prev.offset + prev.limit <= nxt.offset, "requests overlap or go backwards"
    assert plan[0].offset + plan[0].skip == start
    assert plan[-1].offset + plan[-1].skip + plan[-1].take == end + 1
    assert sum(b.take for b in plan) == end - start + 1


def assemble(plan: list[Block], size: int) -> bytes:
    """Run the plan against the synthetic file and join the trimmed pieces."""
    return b"".join(trim(b, fetch(b, size)) for b in plan)


# Cases expressed in units of the geometry (M = max_block, m = min_block) so the same table
# runs with Telegram's real sizes and with tiny blocks.
Case = Callable[[int, int], tuple[int, int, int, list[Block]]]
CASES: dict[str, Case] = {
    "first byte of a 10-window file": lambda M, m: (0, 0, 10 * M, [Block(0, m, 0, 1)]),
    "first two bytes (Safari probe)": lambda M, m: (0, 1, 10 * M, [Block(0, m, 0, 2)]),
    "straddles the first window boundary": lambda M, m: (
        M - 1,
        M,
        10 * M,
        [Block(M - m, m, m - 1, 1), Block(M, m, 0, 1)],
    ),
    "straddles the third window boundary": lambda M, m: (
        3 * M - 1,
        3 * M,
        10 * M,
        [Block(3 * M - m, m, m - 1, 1), Block(3 * M, m, 0, 1)],
    ),
    "straddles a min-block boundary inside a window": lambda M, m: (
        m - 1,
        m,
        10 * M,
        [Block(0, 2 * m, m - 1, 2)],
    ),
    "last byte of a 1-window file": lambda M, m: (M - 1, M - 1, M, [Block(M - m, m, m - 1, 1)]),
    "last byte of a 2-window file": lambda M, m: (
        2 * M - 1,
        2 * M - 1,
        2 * M,
        [Block(2 * M - m, m, m - 1, 1)],
    ),
    "last byte of a 2-window+1 file": lambda M, m: (
        2 * M,
        2 * M,
        2 * M + 1,
        [Block(2 * M, m, 0, 1)],
    ),
    "last byte of a 2-window-1 file": lambda M, m: (
        2 * M - 2,
        2 * M - 2,
        2 * M - 1,
        [Block(2 * M - m, m, m - 2, 1)],
    ),
    "last byte of a 1-window-1 file": lambda M, m: (
        M - 2,
        M - 2,
        M - 1,
        [Block(M - m, m, m - 2, 1)],
    ),
    "last byte of a 1-window+1 file": lambda M, m: (M, M, M + 1, [Block(M, m, 0, 1)]),
    "whole file of exactly 3 windows": lambda M, m: (
        0,
        3 * M - 1,
        3 * M,
        [Block(0, M, 0, M), Block(M, M, 0, M), Block(2 * M, M, 0, M)],
    ),
    "whole file of 3 windows + 1 byte": lambda M, m: (
        0,
        3 * M,
        3 * M + 1,
        [Block(0, M, 0, M), Block(M, M, 0, M), Block(2 * M, M, 0, M), Block(3 * M, m, 0, 1)],
    ),
    "tail of a window, ending at its last byte": lambda M, m: (
        M - 10,
        M - 1,
        10 * M,
        [Block(M - m, m, m - 10, 10)],
    ),
    "most of a window, ending at its last byte": lambda M, m: (
        m + 1,
        M - 1,
        10 * M,
        [Block(0, M, m + 1, M - m - 1)],
    ),
    "two whole windows ending at a window's last byte": lambda M, m: (
        M,
        3 * M - 1,
        10 * M,
        [Block(M, M, 0, M), Block(2 * M, M, 0, M)],
    ),
    "partial, full and partial windows": lambda M, m: (
        M + 5,
        3 * M + 5,
        10 * M,
        [Block(M, M, 5, M - 5), Block(2 * M, M, 0, M), Block(3 * M, m, 0, 6)],
    ),
    "one-byte file": lambda M, m: (0, 0, 1, [Block(0, m, 0, 1)]),
    "whole file smaller than the minimum block": lambda M, m: (
        0,
        m - 2,
        m - 1,
        [Block(0, m, 0, m - 1)],
    ),
}


@pytest.mark.parametrize(("max_block", "min_block"), [REAL, TINY])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_plan_table(case: str, max_block: int, min_block: int) -> None:
    """Boundary ranges plan exactly the expected requests and reassemble the right bytes."""
    start, end, size, expected = CASES[case](max_block, min_block)
    plan = plan_blocks(start, end, size, max_block=max_block, min_block=min_block)
    assert plan == expected
    check_plan(plan, start, end, size, max_block, min_block)
    assert assemble(plan, size) == file_bytes(start, end + 1, size)


def test_whole_3_mib_file_requests_nothing_at_3_mib() -> None:
    """A whole 3 MiB file is three full 1 MiB requests and none at or past 3 MiB."""
    plan = plan_blocks(0, 3 * MIB - 1, 3 * MIB)
    assert [(b.offset, b.limit) for b in plan] == [(0, MIB), (MIB, MIB), (2 * MIB, MIB)]
    assert all(b.offset < 3 * MIB for b in plan)


def test_real_defaults_first_byte_of_10_mib() -> None:
    """bytes=0-0 of a 10 MiB file with default geometry is one 4 KiB request keeping 1 byte."""
    assert plan_blocks(0, 0, 10 * MIB) == [
        Block(offset=0, limit=TELEGRAM_MIN_BLOCK, skip=0, take=1)
    ]


@pytest.mark.parametrize("k", [1, 2, 3, 50])
@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_last_byte_of_sizes_around_mib_multiples(k: int, delta: int) -> None:
    """The last byte of a k MiB (+-1) file is fetched by one minimal request in its window."""
    size = k * MIB + delta
    plan = plan_blocks(size - 1, size - 1, size)
    assert len(plan) == 1
    (block,) = plan
    assert block.limit == TELEGRAM_MIN_BLOCK
    assert block.offset + block.skip == size - 1
    assert block.take == 1
    check_plan(plan, size - 1, size - 1, size, MIB, TELEGRAM_MIN_BLOCK)
    assert assemble(plan, size) == file_bytes(size - 1, size, size)


@pytest.mark.parametrize(
    ("offset", "limit", "expected"),
    [
        (0, TELEGRAM_MIN_BLOCK, None),
        (0, MIB, None),
        (MIB, MIB, None),
        (TELEGRAM_MIN_BLOCK, 2 * TELEGRAM_MIN_BLOCK, None),  # offset need not divide by limit
        (MIB - TELEGRAM_MIN_BLOCK, TELEGRAM_MIN_BLOCK, None),
        (MIB - TELEGRAM_MIN_BLOCK, 2 * TELEGRAM_MIN_BLOCK, "LIMIT_INVALID"),  # crosses 1 MiB
        (TELEGRAM_MIN_BLOCK, MIB, "LIMIT_INVALID"),  # crosses 1 MiB
        (0, 2 * MIB, "LIMIT_INVALID"),
        (0, 3 * TELEGRAM_MIN_BLOCK, "LIMIT_INVALID"),  # multiple of 4 KiB but not a power of two
        (0, 1000, "LIMIT_INVALID"),
        (0, 0, "LIMIT_INVALID"),
        (0, -TELEGRAM_MIN_BLOCK, "LIMIT_INVALID"),
        (1, TELEGRAM_MIN_BLOCK, "OFFSET_INVALID"),
        (TELEGRAM_MIN_BLOCK // 2, TELEGRAM_MIN_BLOCK, "OFFSET_INVALID"),
        (-TELEGRAM_MIN_BLOCK, TELEGRAM_MIN_BLOCK, "OFFSET_INVALID"),
        (1, 1000, "OFFSET_INVALID"),  # offset is checked first
    ],
)
def test_telegram_rule_violation(offset: int, limit: int, expected: str | None) -> None:
    """The checker reproduces Telegram's documented GetFile rules with the real constants."""
    assert telegram_rule_violation(offset, limit) == expected


@pytest.mark.parametrize(
    ("offset", "limit", "expected"),
    [
        (0, TINY_MAX, None),
        (TINY_MAX - TINY_MIN, TINY_MIN, None),
        (TINY_MAX - TINY_MIN, 2 * TINY_MIN, "LIMIT_INVALID"),
        (1, TINY_MIN, "OFFSET_INVALID"),
        (0, 2 * TINY_MAX, "LIMIT_INVALID"),
    ],
)
def test_telegram_rule_violation_tiny_geometry(
    offset: int, limit: int, expected: str | None
) -> None:
    """The checker applies the same rules to a tiny test geometry."""
    got = telegram_rule_violation(offset, limit, max_block=TINY_MAX, min_block=TINY_MIN)
    assert got == expected


def test_trim_whole_response_is_returned_unchanged() -> None:
    """A response that is exactly the kept bytes is returned without copying."""
    data = file_bytes(0, TINY_MAX, 10 * TINY_MAX)
    assert trim(Block(0, TINY_MAX, 0, TINY_MAX), data) is data


def test_trim_slices_and_ignores_extra_tail() -> None:
    """Trim drops `skip` bytes, keeps `take`, and ignores anything after them."""
    data = bytes(range(TINY_MAX))
    piece = trim(Block(0, TINY_MAX, 3, 5), data)
    assert bytes(piece) == data[3:8]


def test_trim_accepts_short_final_read_that_covers_take() -> None:
    """At end of file Telegram returns fewer than `limit` bytes, which is fine if take fits."""
    data = bytes(range(TINY_MIN - 4))
    assert bytes(trim(Block(0, TINY_MIN, 2, TINY_MIN - 6), data)) == data[2:]


@pytest.mark.parametrize(
    ("block", "length"),
    [
        (Block(0, TINY_MIN, 0, 1), 0),
        (Block(0, TINY_MIN, 3, 5), 7),
        (Block(0, TINY_MAX, 0, TINY_MAX), TINY_MAX - 1),
        (Block(TINY_MAX, TINY_MIN, TINY_MIN - 1, 1), TINY_MIN - 1),
    ],
)
def test_trim_short_read_raises(block: Block, length: int) -> None:
    """Data too short to supply `take` bytes raises ShortRead, a ValueError."""
    with pytest.raises(ShortRead) as excinfo:
        trim(block, bytes(length))
    assert isinstance(excinfo.value, ValueError)
    assert excinfo.value.block == block
    assert excinfo.value.got == length


@pytest.mark.parametrize(
    ("start", "end", "size", "max_block", "min_block", "match"),
    [
        (0, 0, 10, 48, TINY_MIN, "max_block"),
        (0, 0, 10, 0, TINY_MIN, "max_block"),
        (0, 0, 10, -TINY_MAX, TINY_MIN, "max_block"),
        (0, 0, 10, TINY_MAX, 24, "min_block"),
        (0, 0, 10, TINY_MAX, 0, "min_block"),
        (0, 0, 10, TINY_MIN, TINY_MAX, "min_block"),
        (0, 0, 0, TINY_MAX, TINY_MIN, "size"),
        (0, 0, -1, TINY_MAX, TINY_MIN, "size"),
        (-1, 0, 10, TINY_MAX, TINY_MIN, "start"),
        (5, 4, 10, TINY_MAX, TINY_MIN, "end"),
        (0, 10, 10, TINY_MAX, TINY_MIN, "past the last byte"),
        (10, 10, 10, TINY_MAX, TINY_MIN, "past the last byte"),
    ],
)
def test_plan_blocks_value_errors(
    start: int, end: int, size: int, max_block: int, min_block: int, match: str
) -> None:
    """Invalid geometry or an unclamped range is a ValueError, never a bad plan."""
    with pytest.raises(ValueError, match=match):
        plan_blocks(start, end, size, max_block=max_block, min_block=min_block)


@pytest.mark.parametrize("bad", [True, 64.0])
def test_plan_blocks_rejects_non_int_block_sizes(bad: object) -> None:
    """Booleans and floats are not accepted as block sizes."""
    with pytest.raises(ValueError, match="max_block"):
        plan_blocks(0, 0, 10, max_block=bad)  # type: ignore[arg-type]


@st.composite
def _position(draw: st.DrawFn, lo: int, hi: int, unit: int) -> int:
    """A position in [lo, hi], biased towards multiples of `unit` and their neighbours."""
    if draw(st.booleans()):
        return draw(st.integers(lo, hi))
    k = draw(st.integers(lo // unit, hi // unit + 1))
    return min(hi, max(lo, k * unit + draw(st.integers(-1, 1))))


@st.composite
def _range(draw: st.DrawFn, max_size: int, max_block: int) -> tuple[int, int, int]:
    """A file size in 1..max_size and a clamped range start <= end < size."""
    size = draw(_position(1, max_size, max_block))
    start = draw(_position(0, size - 1, max_block))
    end = draw(_position(start, size - 1, max_block))
    return start, end, size


@settings(deadline=None)
@given(rng=_range(50 * MIB, MIB))
def test_property_real_geometry_reassembles_range(rng: tuple[int, int, int]) -> None:
    """With real sizes, trimmed responses joined equal the requested range of up to 50 MiB files."""
    start, end, size = rng
    plan = plan_blocks(start, end, size)
    check_plan(plan, start, end, size, MIB, TELEGRAM_MIN_BLOCK)
    assert assemble(plan, size) == file_bytes(start, end + 1, size)


@st.composite
def _tiny_case(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
    """A tiny geometry (powers of two, min <= max) and a range in a small file."""
    max_block = draw(st.sampled_from([1, 2, 4, 8, 16, 32, TINY_MAX, 128]))
    min_block = draw(st.sampled_from([p for p in (1, 2, 4, 8, TINY_MIN, 32) if p <= max_block]))
    start, end, size = draw(_range(20 * max_block, max_block))
    return start, end, size, max_block, min_block


@given(case=_tiny_case())
def test_property_tiny_geometry_reassembles_range(case: tuple[int, int, int, int, int]) -> None:
    """With tiny blocks on small data, trimmed responses joined equal data[start:end+1]."""
    start, end, size, max_block, min_block = case
    data = file_bytes(0, size, size)
    plan = plan_blocks(start, end, size, max_block=max_block, min_block=min_block)
    check_plan(plan, start, end, size, max_block, min_block)
    joined = b"".join(trim(b, data[b.offset : b.offset + b.limit]) for b in plan)
    assert joined == data[start : end + 1]
