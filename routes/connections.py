"""Per-client connection cap: one address cannot hold every socket (and file descriptor).

aiohttp accepts every connection; with 1,024 descriptors, a thousand idle sockets from one host
left normal viewers timing out. :class:`ConnectionGuard` wraps the server's protocol factory:
a connection from an address that already has ``per_client`` open gets a short 503 with
Retry-After and is closed before aiohttp sees it. Connections from a trusted reverse proxy are
not capped here (they carry many clients; the proxy limits its own), per-client stream caps
still apply to the forwarded address.

Idle and slow connections are bounded by aiohttp itself, configured in ``streambot/app.py``: its
keep-alive timer runs from the moment a connection opens and from the end of each response, and
closes the connection if no complete request head has arrived by then.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
_REASON = b"Too many connections from your address; close some and try again.\n"
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Retry-After: " + str(RETRY_AFTER_SECONDS).encode() + b"\r\n"
    b"Connection: close\r\n"
    b"Content-Length: " + str(len(_REASON)).encode() + b"\r\n\r\n" + _REASON
)


class ConnectionGuard:
    """Counts open connections per peer address; refuses those beyond ``per_client``."""

    def __init__(self, per_client: int, *, exempt: Callable[[str], bool] = lambda _a: False):
        self.per_client = per_client
        self._exempt = exempt
        # One entry per address with an open connection: bounded by the open sockets.
        self._open: Counter[str] = Counter()
        self.refused = 0

    def open_from(self, address: str) -> int:
        return self._open[address]

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` in front of aiohttp's ``factory``."""
        return lambda: _Guarded(self, factory)

    def _admit(self, address: str) -> bool:
        if self._exempt(address) or self._open[address] < self.per_client:
            self._open[address] += 1
            return True
        self.refused += 1
        return False

    def _release(self, address: str) -> None:
        self._open[address] -= 1
        if self._open[address] <= 0:
            del self._open[address]


class _Guarded(asyncio.Protocol):
    """Forwards every protocol event to aiohttp's handler, once the connection is admitted."""

    def __init__(self, guard: ConnectionGuard, factory: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._factory = factory
        self._inner: asyncio.Protocol | None = None
        self._address = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._address = peer[0] if isinstance(peer, tuple) and peer else ""
        if not self._guard._admit(self._address):
            log.debug("refused a connection from %s: per-client cap reached", self._address)
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(REFUSAL)
            transport.close()
            return
        self._inner = self._factory()
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._guard._release(self._address)
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


class GuardedSite(web.TCPSite):
    """aiohttp's TCP site with the :class:`ConnectionGuard` in front of its protocol factory."""

    __slots__ = ("_guard", "_sock")

    def __init__(
        self,
        runner: web.BaseRunner,
        guard: ConnectionGuard,
        host: str,
        port: int,
        *,
        reuse_port: bool = False,
        sock: socket.socket | None = None,
    ):
        super().__init__(runner, host, port, reuse_port=reuse_port or None)
        self._guard = guard
        # A socket bound beforehand (the demo binds port 0 first so its links carry the real
        # port); host and port then only name it.
        self._sock = sock

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        if self._sock is not None:
            self._server = await loop.create_server(
                self._guard.wrap(server), sock=self._sock, backlog=self._backlog
            )
        else:
            self._server = await loop.create_server(
                self._guard.wrap(server),
                self._host,
                self._port,
                backlog=self._backlog,
                reuse_port=self._reuse_port,
            )
        self._bound_port = self._server.sockets[0].getsockname()[1]


class QuietClientErrors(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger, with malformed requests logged as one DEBUG line.

    aiohttp logs every request it cannot parse (bad request line, a header over 8,190 bytes,
    bad chunking) as an ERROR with a traceback: anyone could fill the log with tracebacks just by
    sending junk, and a real error would drown in them. Those are the client's fault and get a
    400 already; real failures in a handler (which become a 500) still log as ERROR.
    """

    def log(self, level: int, msg: object, *args: object, **kwargs: object) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            kwargs.pop("exc_info")
            # Not msg % args: args may hold client-chosen text; logging formats it lazily.
            self.logger.debug(f"{msg} (malformed request: %r)", *args, exc, **kwargs)  # type: ignore[arg-type]
            return
        self.logger.log(level, msg, *args, **kwargs)  # type: ignore[arg-type]

    def exception(self, msg: object, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("exc_info", True)
        self.log(logging.ERROR, msg, *args, **kwargs)
