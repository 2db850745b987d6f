"""The application's error tree; routes translate these to HTTP statuses in one place
(the table in ``routes/errors.py``).

StreamBotError
├── FileNotFound          the stored message is gone or holds no file        -> 404
├── LinkRevoked           the file's links were revoked                      -> 410
├── ServiceBusy           overload, memory pressure, the service's quota     -> 503 + Retry-After
├── QuotaExceeded         the file owner's daily quota is used up            -> 429 + Retry-After
└── StreamAborted         the bytes cannot continue mid-response             -> connection aborted

UnreadableAnswer is a ConnectionError instead: junk where a Telegram answer should be is handled
like any network failure (retry, another client, 502).
"""

from __future__ import annotations

import struct

# What pyrogram's TL reader raises when the bytes that came back are not a Telegram answer at
# all (a proxy or firewall answering in Telegram's place): see UnreadableAnswer.
UNREADABLE_ANSWER: tuple[type[Exception], ...] = (
    KeyError,
    IndexError,
    ValueError,
    EOFError,
    struct.error,
)


class UnreadableAnswer(ConnectionError):
    """Telegram's side of a connection sent bytes that are not a Telegram answer.

    A ``ConnectionError`` so every network-failure path (retries, failover, 502) handles it.
    """

    def __init__(self, cause: BaseException) -> None:
        super().__init__(
            f"Telegram's answer could not be read ({type(cause).__name__}: {cause}); "
            "is a proxy or firewall intercepting connections to Telegram?"
        )


class StreamBotError(Exception):
    """Base class of errors the application raises on purpose."""


class FileNotFound(StreamBotError):
    """The storage message does not exist or carries no downloadable media."""


class LinkRevoked(StreamBotError):
    """The owner or an admin revoked every link to this file."""


class ServiceBusy(StreamBotError):
    """The whole service refuses new work for now (memory, its own quota); ``retry_after`` in s."""

    def __init__(self, message: str, retry_after: float = 30.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QuotaExceeded(StreamBotError):
    """One owner's quota is used up; other owners' files still download. ``retry_after`` in s."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StreamAborted(StreamBotError):
    """Telegram could not deliver the rest of a body; the response must be cut, never ended short."""
