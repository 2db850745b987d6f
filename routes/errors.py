"""One table from the application's errors to what a web visitor is told.

Each refusal a route can give before the first byte (a bad or expired link, a missing or revoked
file, memory pressure, a quota, too many streams, Telegram not answering) has exactly one status,
one sentence, one page heading and one Retry-After rule, here. The download route answers them as
plain text, the watch page as HTML; neither spells a status or a sentence itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from streambot import links
from streambot.errors import FileNotFound, LinkRevoked, QuotaExceeded, ServiceBusy, StreamAborted
from utils.stream_cleanup import ClientStreamsFull, RegistryFull

__all__ = ["REFUSED", "Refusal", "refusal_for"]

#: The Retry-After column's marker for "the seconds the error itself carries".
FROM_ERROR = -1.0


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refusal as the visitor sees it: status, one sentence, a page heading, Retry-After."""

    status: int
    sentence: str
    heading: str
    retry_after: int | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}

    def plain(self, **headers: str) -> web.Response:
        """The refusal as a one-line plain-text answer; never a traceback, never a secret."""
        return web.Response(
            status=self.status, text=self.sentence + "\n", headers={**self.headers, **headers}
        )


@dataclass(frozen=True, slots=True)
class _Row:
    error: type[Exception]
    status: int
    sentence: str | None  # None: the error's own message, written for people
    heading: str
    retry_after: float | None = None  # seconds, FROM_ERROR, or None for no header


_TELEGRAM_DOWN = "Telegram did not answer; try again shortly."

# First match wins, so a subclass must come before its base (ExpiredLink is not an InvalidLink
# today, but the order is what would keep it right).
_TABLE: tuple[_Row, ...] = (
    _Row(links.ExpiredLink, 410, "This link has expired.", "Link no longer valid"),
    _Row(links.InvalidLink, 403, "This link is not valid.", "Link not valid"),
    _Row(FileNotFound, 404, "This file is no longer available.", "File not available"),
    _Row(LinkRevoked, 410, "This link was revoked.", "Link no longer valid"),
    _Row(QuotaExceeded, 429, None, "Too many requests", FROM_ERROR),
    _Row(ServiceBusy, 503, None, "Busy right now", FROM_ERROR),
    _Row(
        ClientStreamsFull,
        429,
        "Too many downloads from your address; try again shortly.",
        "Too many requests",
        10,
    ),
    _Row(
        RegistryFull, 503, "Too many downloads right now; try again shortly.", "Busy right now", 10
    ),
    # Before any byte went out (the lookup, or the first block): a clean 502 is still possible.
    _Row(StreamAborted, 502, _TELEGRAM_DOWN, "Telegram did not answer", 5),
)

#: Every error type the table answers, for ``except`` clauses.
REFUSED: tuple[type[Exception], ...] = tuple(row.error for row in _TABLE)


def refusal_for(exc: Exception) -> Refusal:
    """Given an error from ``REFUSED``, return how the visitor is told; TypeError for others."""
    for row in _TABLE:
        if isinstance(exc, row.error):
            retry = row.retry_after
            if retry == FROM_ERROR:
                retry = float(getattr(exc, "retry_after", 30.0))
            return Refusal(
                status=row.status,
                sentence=row.sentence if row.sentence is not None else str(exc),
                heading=row.heading,
                retry_after=None if retry is None else max(1, round(retry)),
            )
    raise TypeError(f"no refusal for {type(exc).__name__}")
