"""GET/HEAD ``/dl/<token>/<name>``: a stored file over HTTP, with ranges, validators and seeking.

The decision (200/206/304/412/416 and which ranges) is made by the pure
:mod:`routes.http_semantics`; this module only maps it onto aiohttp and moves the bytes. Errors of the
application become short plain-text answers here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from routes import http_semantics as hs
from routes import keys
from routes.errors import REFUSED, Refusal, refusal_for
from routes.send_queue import unsent_bytes
from streambot import links
from streambot.admission import Admitted, merge
from streambot.catalog import FileInfo
from streambot.errors import StreamAborted
from streambot.metrics import Metrics
from streambot.streamer import StreamProgress
from utils.stream_cleanup import RegistryFull, TrackedStream

log = logging.getLogger(__name__)

# Browsers revalidate (cheap 304 with the ETag) instead of reusing a copy blindly: links can be revoked.
CACHE_CONTROL = "private, no-cache"


def plain(status: int, reason: str, **headers: str) -> web.Response:
    """A one-line plain-text answer; never a traceback, never a secret."""
    return web.Response(status=status, text=reason + "\n", headers=headers)


@dataclass(frozen=True, slots=True)
class Resolved:
    """A link that verified, its file, and what admission learned (the owner to bill)."""

    claims: links.LinkClaims
    info: FileInfo
    admitted: Admitted


async def resolve(request: web.Request) -> Resolved | Refusal:
    """Verify the token, look the file up and run admission; the refusal if any step says no.

    Shared by the download and watch routes so both give the same answers to bad links.
    """
    app = request.app
    token = request.match_info["token"]
    try:
        claims = links.verify(token, app[keys.LINK_SECRET], now=time.time())
        info = await app[keys.CATALOG].info(claims.message_id)
        admitted = merge([await check.admit(claims.message_id) for check in app[keys.ADMISSION]])
    except REFUSED as exc:
        return refusal_for(exc)
    return Resolved(claims, info, admitted)


def representation(info: FileInfo) -> hs.Representation:
    return hs.Representation(
        size=info.size, etag=hs.etag_for(info.unique_id), last_modified=info.date
    )


def _headers(info: FileInfo, rep: hs.Representation, attachment: bool) -> dict[str, str]:
    inline = not attachment and hs.disposition_is_inline(info.mime_type)
    return {
        "Accept-Ranges": "bytes",
        "ETag": rep.etag,
        "Last-Modified": hs.http_date(rep.last_modified),
        "Cache-Control": CACHE_CONTROL,
        "Content-Type": info.mime_type,
        "Content-Disposition": hs.content_disposition(info.name, attachment=not inline),
        "X-Content-Type-Options": "nosniff",
    }


async def download(request: web.Request) -> web.StreamResponse:
    """Answer a download: refused, answered by headers alone, one range, or multipart."""
    started = time.perf_counter()
    resolved = await resolve(request)
    metrics = request.app[keys.METRICS]
    if isinstance(resolved, Refusal):
        _observe(metrics, started, resolved.status)
        return resolved.plain()
    info = resolved.info
    rep = representation(info)
    settings = request.app[keys.SETTINGS]
    decision = hs.evaluate(request.method, request.headers, rep, max_ranges=settings.max_ranges)
    headers = _headers(info, rep, attachment=request.query.get("download") == "1")
    if decision.status in (304, 412, 416):
        _observe(metrics, started, decision.status)
        return _answer_without_body(decision.status, info, rep, headers)
    if decision.multipart:
        return await _stream_multipart(request, resolved, decision, headers, started)
    return await _stream_one(request, resolved, decision, headers, started)


def _answer_without_body(
    status: int, info: FileInfo, rep: hs.Representation, headers: dict[str, str]
) -> web.Response:
    """304, 412 and 416: the conditional or range evaluation already is the whole answer."""
    if status == 304:
        return web.Response(
            status=304,
            headers={k: headers[k] for k in ("ETag", "Last-Modified", "Cache-Control")},
        )
    if status == 412:
        return plain(412, "Precondition failed.", ETag=rep.etag)
    return plain(
        416,
        "Requested range not satisfiable.",
        **{"Content-Range": hs.unsatisfied_content_range(info.size), "ETag": rep.etag},
    )


async def _stream_one(
    request: web.Request,
    resolved: Resolved,
    decision: hs.Decision,
    headers: dict[str, str],
    started: float,
) -> web.StreamResponse:
    """200 for the whole file or 206 for one range: one part, its first block before headers."""
    info = resolved.info
    part: hs.ByteRange | None
    if decision.status == 200:
        part = hs.ByteRange(0, info.size - 1) if info.size else None
        headers["Content-Length"] = str(info.size)
    else:
        part = decision.ranges[0]
        headers["Content-Range"] = part.content_range(info.size)
        headers["Content-Length"] = str(part.length)
    response = web.StreamResponse(status=decision.status, headers=headers)
    if request.method == "HEAD" or part is None:
        return await _headers_only(request, response, started)
    whole = part

    async def body(tracked: TrackedStream) -> None:
        await _pump(request, response, info, whole, tracked, started=started)

    return await _tracked(request, response, resolved, whole.start, whole.end, body, started)


async def _stream_multipart(
    request: web.Request,
    resolved: Resolved,
    decision: hs.Decision,
    headers: dict[str, str],
    started: float,
) -> web.StreamResponse:
    """206 multipart/byteranges: the length is known from the layout, so headers go first."""
    info = resolved.info
    ranges = decision.ranges
    layout = hs.multipart_layout(ranges, info.size, info.mime_type, boundary=secrets.token_hex(12))
    headers["Content-Type"] = layout.content_type
    headers["Content-Length"] = str(layout.content_length)
    response = web.StreamResponse(status=decision.status, headers=headers)
    if request.method == "HEAD":
        return await _headers_only(request, response, started)
    metrics = request.app[keys.METRICS]

    async def body(tracked: TrackedStream) -> None:
        await response.prepare(request)
        _observe(metrics, started, decision.status)
        for header, part in layout.parts:
            await _write(request, response, tracked, header)
            await _pump(request, response, info, part, tracked)
        await _write(request, response, tracked, layout.closing)

    return await _tracked(
        request, response, resolved, ranges[0].start, ranges[-1].end, body, started
    )


async def _headers_only(
    request: web.Request, response: web.StreamResponse, started: float
) -> web.StreamResponse:
    """HEAD, or an empty file: everything is in the file info; Telegram is never asked."""
    metrics = request.app[keys.METRICS]
    try:
        await response.prepare(request)
        _observe(metrics, started, response.status)
        await response.write_eof()
    except ConnectionError as exc:
        # The viewer left during the lookup: routine, as for a stream (see _tracked).
        log.debug("viewer %s hung up before the headers: %r", request.remote, exc)
        metrics.count_error("client_disconnect")
    return response


async def _tracked(
    request: web.Request,
    response: web.StreamResponse,
    resolved: Resolved,
    start: int,
    end: int,
    body: Callable[[TrackedStream], Awaitable[None]],
    started: float,
) -> web.StreamResponse:
    """Run ``body`` as a tracked stream billed to the admitted owner; map how it can end."""
    info = resolved.info
    metrics = request.app[keys.METRICS]
    registry = request.app[keys.REGISTRY]
    try:
        async with registry.track(
            message_id=info.message_id,
            file_name=info.name,
            start=start,
            end=end,
            remote=request.remote or "",
            owner_id=resolved.admitted.owner_id,
        ) as tracked:
            complete = False
            try:
                await body(tracked)
                if tracked.handed != response.content_length:
                    # Never finish a body that is not what the headers promised.
                    raise StreamAborted(
                        f"body ended after {tracked.handed} of {response.content_length} bytes"
                    )
                await response.write_eof()
                complete = True
                # A finished response is flushed to the socket even if the connection closes
                # next (close() writes the buffer out; only an abort drops it).
                _bill(request, tracked, written=tracked.handed)
            finally:
                if not complete and response.prepared:
                    if request.transport is not None:  # we cut it: bill what got out first
                        _bill(request, tracked, written=tracked.handed - _buffered(request))
                    # Headers promised a length we did not deliver: cut the connection so the
                    # client sees a failed transfer, never a short body that looks complete
                    # (and the connection is not reused with a half-sent body on it).
                    _abort(request)
    except RegistryFull as exc:
        metrics.count_error("registry_full")
        return refusal_for(exc).plain()
    except _FirstBlockFailed as exc:
        log.warning("stream of message %s failed on its first block: %s", info.message_id, exc)
        metrics.count_error("first_block_failed")
        _observe(metrics, started, 502)
        return refusal_for(exc.cause).plain()
    except StreamAborted as exc:
        log.warning("stream of message %s aborted: %s", info.message_id, exc)
        metrics.count_error("stream_aborted")
    except ConnectionError as exc:
        # The viewer went away: routine. The whole family, not only ConnectionResetError: a
        # reset while we wait on back-pressure surfaces as a bare ConnectionError, a write after
        # a close as aiohttp's ClientConnectionResetError, a broken pipe as BrokenPipeError. The
        # context managers have already cancelled the in-flight Telegram requests, returned the
        # budget and unregistered the stream.
        log.debug("viewer %s hung up on message %s: %r", request.remote, info.message_id, exc)
        metrics.count_error("client_disconnect")
    except asyncio.CancelledError:
        # The stale-stream sweep or shutdown cut the stream; cancellation always propagates.
        metrics.count_error("cancelled")
        raise
    return response


def _abort(request: web.Request) -> None:
    """Cut the connection with a reset (RST), never a clean end of stream (FIN).

    ``transport.abort()`` alone closes the socket normally: the kernel still delivers what it
    holds and then a FIN, so the viewer sees a clean EOF short of Content-Length, which clients
    that ignore the length store as a complete file. SO_LINGER with a zero timeout makes the
    close a reset, so every client sees a failed transfer.
    """
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
    transport.abort()


#: struct linger {l_onoff = 1, l_linger = 0}: close() sends RST and drops unsent data.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


#: Body bytes go to aiohttp in slices of this size, each accounted once it is written, so when a
#: viewer hangs up, the bill and what reached the socket differ by at most a slice plus the
#: transport's buffer (not by a whole 1 MiB block).
WRITE_SLICE = 64 * 1024


async def _write(
    request: web.Request,
    response: web.StreamResponse,
    tracked: TrackedStream,
    data: bytes | memoryview,
) -> None:
    """Write body bytes; bill those the kernel accepted (registry, bandwidth and /metrics).

    Billing counts bytes written to the socket, as nginx's ``$bytes_sent`` does: what aiohttp
    still buffers in this process when the viewer hangs up never reached them.
    """
    view = memoryview(data)
    for start in range(0, len(view), WRITE_SLICE):
        piece = view[start : start + WRITE_SLICE]
        await response.write(piece)
        tracked.handed += len(piece)
        _bill(request, tracked, written=tracked.handed - _buffered(request))


def _buffered(request: web.Request) -> int:
    """Bytes the transport holds in this process, not yet written to the socket."""
    transport = request.transport
    return transport.get_write_buffer_size() if transport is not None else 0


def _bill(request: web.Request, tracked: TrackedStream, *, written: int) -> None:
    """Account for body bytes written to the socket up to ``written`` (never backwards)."""
    delta = written - tracked.bytes_sent
    if delta > 0:
        request.app[keys.REGISTRY].progress(tracked, delta)
        request.app[keys.METRICS].bytes_sent.inc(delta)


class _FirstBlockFailed(Exception):
    """The stream failed before any header was sent, so a clean error answer is still possible."""

    def __init__(self, cause: StreamAborted) -> None:
        super().__init__(str(cause))
        self.cause = cause


async def _pump(
    request: web.Request,
    response: web.StreamResponse,
    info: FileInfo,
    part: hs.ByteRange,
    tracked: TrackedStream,
    *,
    started: float | None = None,
) -> None:
    """Write one range's bytes; prepares the response after the first block when ``started``."""
    app = request.app
    progress = StreamProgress()
    written = 0  # this part's body bytes handed to the connection

    def taken() -> int:
        unsent = unsent_bytes(request.transport)
        return 0 if unsent is None else max(0, written - unsent)

    agen: AsyncIterator[bytes | memoryview] = app[keys.STREAMER].stream(
        info, part.start, part.end, progress, taken=taken
    )
    async with contextlib.aclosing(agen):  # type: ignore[type-var]
        if started is not None:
            # Fetch the first block before sending headers: if Telegram fails right away the
            # viewer gets a clean 502 instead of a cut connection.
            try:
                chunk = await anext(agen)
            except StreamAborted as exc:
                raise _FirstBlockFailed(exc) from exc
            tracked.client = progress.client
            await response.prepare(request)
            _observe(app[keys.METRICS], started, response.status)
            await _write(request, response, tracked, chunk)
            written += len(chunk)
        async for chunk in agen:
            tracked.client = progress.client
            await _write(request, response, tracked, chunk)
            written += len(chunk)


def _observe(metrics: Metrics, started: float, status: int) -> None:
    elapsed = time.perf_counter() - started
    metrics.request_latency.labels(route="dl", status=str(status)).observe(elapsed)


def add_routes(app: web.Application) -> None:
    for path in ("/dl/{token}", "/dl/{token}/{name:.*}"):
        app.router.add_route("GET", path, download)
        app.router.add_route("HEAD", path, download)
