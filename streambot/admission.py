"""Admission: the checks a download must pass before its first byte, and what they learn.

Each check refuses by raising a :class:`~streambot.errors.StreamBotError` (memory pressure,
quota, revocation). What a check learns about the download that later accounting needs, the
file's owner, is returned and travels with the stream, so nothing has to look it up again
while bytes flow (a cache could have forgotten it by then).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Admission", "Admitted", "merge"]


@dataclass(frozen=True, slots=True)
class Admitted:
    """What admission learned: the owner the stream's bytes are billed to (None: nobody's)."""

    owner_id: int | None = None


class Admission(Protocol):
    """One admission check (the memory manager, the link guard)."""

    async def admit(self, message_id: int) -> Admitted:
        """Admit a new download of ``message_id`` or raise the error that refuses it."""
        ...


def merge(results: list[Admitted]) -> Admitted:
    """Given every check's answer in order, return one: the first owner any check named."""
    owner = next((r.owner_id for r in results if r.owner_id is not None), None)
    return Admitted(owner)
