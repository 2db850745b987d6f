"""Bytes of simulated Telegram files: synthetic (any size, nothing allocated) or backed by a disk file.

Synthetic content repeats a seeded pattern whose period is deliberately *not* a divisor of 1 MiB,
so a block served at the wrong offset produces different bytes and byte-exact tests catch it.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
from dataclasses import dataclass
from pathlib import Path

#: 1 MiB + 4099: co-prime with every power of two, so k MiB offsets land on distinct pattern phases.
PATTERN_PERIOD = (1 << 20) + 4099


@functools.lru_cache(maxsize=8)  # bounded: at most 8 patterns (~8 MiB) are kept
def _pattern(seed: int) -> bytes:
    rng = random.Random(seed)
    block = rng.randbytes(PATTERN_PERIOD)
    return block + block  # doubled so any slice shorter than one period is a single copy


def synthetic_bytes(seed: int, offset: int, length: int) -> bytes:
    """Given a seed, return the bytes at [offset, offset+length) of the infinite pattern."""
    if length <= 0:
        return b""
    pattern = _pattern(seed)
    out = bytearray()
    pos = offset % PATTERN_PERIOD
    remaining = length
    while remaining:
        take = min(remaining, PATTERN_PERIOD)
        out += pattern[pos : pos + take]
        remaining -= take
    return bytes(out)


@dataclass(frozen=True, slots=True)
class SyntheticContent:
    """Deterministic bytes of any size (4 GiB and beyond) generated on demand."""

    size: int
    seed: int

    async def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        return synthetic_bytes(self.seed, offset, max(0, end - offset))

    def read_sync(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        return synthetic_bytes(self.seed, offset, max(0, end - offset))


@dataclass(frozen=True, slots=True)
class DiskContent:
    """A file on disk, read lazily per request in a worker thread (never on the event loop)."""

    path: Path
    size: int

    @classmethod
    def of(cls, path: Path | str) -> DiskContent:
        p = Path(path).expanduser()
        return cls(p, p.stat().st_size)

    def read_sync(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if end <= offset:
            return b""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            return os.pread(fd, end - offset, offset)
        finally:
            os.close(fd)

    async def read(self, offset: int, length: int) -> bytes:
        return await asyncio.to_thread(self.read_sync, offset, length)


Content = SyntheticContent | DiskContent
