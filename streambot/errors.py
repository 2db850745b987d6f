"""The application's error tree; routes translate these to HTTP statuses in one place.

StreamBotError
├── FileNotFound          the stored message is gone or holds no file        -> 404
├── LinkRevoked           the file's links were revoked                      -> 410
├── ServiceBusy           overload, memory pressure, quota                   -> 503/429 + Retry-After
└── StreamAborted         the bytes cannot continue mid-response             -> connection aborted
"""

from __future__ import annotations


class StreamBotError(Exception):
    """Base class of errors the application raises on purpose."""


class FileNotFound(StreamBotError):
    """The storage message does not exist or carries no downloadable media."""


class LinkRevoked(StreamBotError):
    """The owner or an admin revoked every link to this file."""


class ServiceBusy(StreamBotError):
    """The service refuses new work for now; ``retry_after`` is in seconds.

    ``status`` is 503 for the whole service (memory, global quota) and 429 for one requester's quota.
    """

    def __init__(self, message: str, retry_after: float = 30.0, *, status: int = 503) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class StreamAborted(StreamBotError):
    """Telegram could not deliver the rest of a body; the response must be cut, never ended short."""
