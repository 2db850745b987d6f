"""Byte units and how sizes are written for people: one definition of each, used everywhere.

Binary units (MiB) size buffers and Telegram's block rules; decimal gigabytes (GB) are what quotas
are configured in, because that is how hosting providers bill transfer.
"""

from __future__ import annotations

import re

__all__ = ["GB", "KIB", "MIB", "gb_text", "human_size", "parse_size"]

KIB = 1 << 10
MIB = 1 << 20
GB = 10**9


def human_size(n: float) -> str:
    """Given a byte count, return it in the largest binary unit up to GiB ("1.5 MiB", "12 B")."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop always returns at GiB


def gb_text(n: int) -> str:
    """Given a byte count, return it in decimal gigabytes, the unit quotas are set in."""
    return f"{n / GB:.2f} GB"


def bytes_text(n: int) -> str:
    """A byte count in decimal units with three significant digits: "0 B", "5 kB", "1.23 GB".

    For counters an admin reads next to a quota (quotas are decimal GB): 5,000 bytes served must
    not show as "0.00 GB".
    """
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000:
            return f"{int(value)} B" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1000
    return f"{value:.3g} TB"


def plural(count: int, word: str) -> str:
    """``plural(1, "stream")`` -> "1 stream", ``plural(2, "stream")`` -> "2 streams"."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


_SIZE = re.compile(r"(\d+)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``4096``, ``512K``, ``24MiB``, ``1GiB``, ``2G``: binary units; ValueError otherwise."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r} (examples: 4096, 512K, 24MiB, 1GiB)")
    return int(match[1]) * _SIZE_UNITS[match[2].lower()]
