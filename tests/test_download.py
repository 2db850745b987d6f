"""GET/HEAD /dl/... through real HTTP against the application on the simulator, byte-exact.

Every HTTP case of issue 3 item 4, plus the link answers of item 1, on small synthetic files with
tiny GetFile blocks (STREAM_BLOCK_SIZE_KIB=4) so that block edges are crossed many times, and on
files of exactly k MiB with real 1 MiB blocks. An autouse fixture checks, after every test, that
no GetFile request broke Telegram's rules.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from routes import http_semantics as hs
from streambot import links
from streambot.simulator import SyntheticContent
from streambot.simulator.world import World
from streambot.units import MIB

from .helpers import (
    LINK_SECRET,
    SMALL_BLOCKS,
    Running,
    StartApp,
    expected,
)

# Every test here also checks that no GetFile broke Telegram's rules (conftest).
pytestmark = pytest.mark.usefixtures("telegram_rules")


@pytest.fixture
def world(fleet_world: World) -> World:
    """Every test here that takes ``world`` runs on a fleet of one client and of three."""
    return fleet_world


SIZE = 50_003  # 13 blocks of 4 KiB, the last one partial
SEED = 11


def assert_requests_within(world: World, ranges: list[tuple[int, int]], block: int) -> None:
    """Every GetFile is at most ``block`` long and overlaps a requested range.

    Overlap implies no request past the block holding a range's last byte.
    """
    calls = world.telegram.getfile_calls()
    assert calls
    for c in calls:
        assert c.offset is not None
        assert c.limit is not None
        assert c.limit <= block
        assert any(c.offset <= end and c.offset + c.limit > start for start, end in ranges), c


async def small_app(world: World, start_app: StartApp, **overrides: Any) -> tuple[Running, str]:
    """The app with 4 KiB blocks and one SIZE-byte file; returns it and the file's link path."""
    _f, msg_id = world.store(SyntheticContent(SIZE, seed=SEED), name="clip.bin")
    app = await start_app(world, **{**SMALL_BLOCKS, **overrides})
    return app, app.dl_path(msg_id, "clip.bin")


def parse_multipart(body: bytes, content_type: str) -> list[tuple[str, str, bytes]]:
    """Split a multipart/byteranges body exactly as framed: (Content-Type, Content-Range, data)."""
    prefix = "multipart/byteranges; boundary="
    assert content_type.startswith(prefix)
    delimiter = b"\r\n--" + content_type[len(prefix) :].encode()
    parts = []
    pos = 0
    while True:
        assert body.startswith(delimiter, pos), body[pos : pos + 80]
        pos += len(delimiter)
        if body.startswith(b"--\r\n", pos):
            pos += 4
            break
        assert body.startswith(b"\r\n", pos)
        head_end = body.index(b"\r\n\r\n", pos + 2)
        fields = dict(
            line.split(": ", 1) for line in body[pos + 2 : head_end].decode("ascii").split("\r\n")
        )
        pos = head_end + 4
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", fields["Content-Range"])
        assert match
        first, last = int(match[1]), int(match[2])
        parts.append(
            (fields["Content-Type"], fields["Content-Range"], body[pos : pos + last - first + 1])
        )
        pos += last - first + 1
    assert pos == len(body), "bytes after the closing delimiter"
    return parts


# ----------------------------------------------------------------------------- ranges

SATISFIABLE = [
    ("bytes=0-0", 0, 0),
    ("bytes=0-4095", 0, 4095),
    ("bytes=4095-4096", 4095, 4096),
    ("bytes=100-20000", 100, 20000),
    ("bytes=40000-", 40000, SIZE - 1),
    ("bytes=-100", SIZE - 100, SIZE - 1),
    ("bytes=-1", SIZE - 1, SIZE - 1),
    ("bytes=-999999", 0, SIZE - 1),  # suffix longer than the file: the whole file
    ("bytes=49000-999999", 49000, SIZE - 1),  # end clamped to the size
    (f"bytes={SIZE - 1}-{SIZE - 1}", SIZE - 1, SIZE - 1),
    ("BYTES=1-2", 1, 2),  # the unit is case-insensitive
    ("Bytes = 5 - 10 ", 5, 10),  # whitespace tolerated
    ("bytes=0-" + "9" * 400, 0, SIZE - 1),  # a huge number never overflows
    ("bytes=" + "0" * 300 + "7-8", 7, 8),  # leading zeros are just zeros
]


@pytest.mark.parametrize(("header", "first", "last"), SATISFIABLE)
async def test_single_range_is_byte_exact(
    world: World, start_app: StartApp, header: str, first: int, last: int
) -> None:
    """A satisfiable single range answers 206 with its exact bytes, Content-Range and length."""
    app, path = await small_app(world, start_app)
    resp = await app.client.get(path, headers={"Range": header})
    assert resp.status == 206
    body = await resp.read()
    assert body == expected(SEED, first, last)
    assert resp.headers["Content-Range"] == f"bytes {first}-{last}/{SIZE}"
    assert resp.headers["Content-Length"] == str(last - first + 1)
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert_requests_within(world, [(first, last)], 4096)


@pytest.mark.parametrize(
    "header",
    [
        "bytes=-0",
        f"bytes={SIZE}-",
        f"bytes={SIZE}-{SIZE + 10}",
        "bytes=999999999999999999999999999999-",
        "bytes=abc",
        "bytes=5-1",  # first > last only: nothing satisfiable
    ],
)
async def test_unsatisfiable_range_is_416(world: World, start_app: StartApp, header: str) -> None:
    """bytes=-0, ranges at or past the end and malformed sets answer 416 with bytes */S."""
    app, path = await small_app(world, start_app)
    resp = await app.client.get(path, headers={"Range": header})
    assert resp.status == 416
    assert resp.headers["Content-Range"] == f"bytes */{SIZE}"
    assert (await resp.text()).count("\n") == 1
    assert world.telegram.count("upload.GetFile") == 0


@pytest.mark.parametrize(
    "header",
    [
        "items=0-5",  # unknown unit: ignored
        "bytes=" + ",".join(f"{i}-{i}" for i in range(17)),  # more ranges than MAX_RANGES
        "bytes=0-,0-",  # more bytes than the file
        "bytes=0-30000,20000-49999",  # overlapping ranges adding up past the size
    ],
)
async def test_ignored_or_abusive_range_gets_full_200(
    world: World, start_app: StartApp, header: str
) -> None:
    """Unknown units and abusive range sets are answered with the whole file (200)."""
    app, path = await small_app(world, start_app)
    resp = await app.client.get(path, headers={"Range": header})
    assert resp.status == 200
    assert await resp.read() == expected(SEED, 0, SIZE - 1)
    assert resp.headers["Content-Length"] == str(SIZE)
    assert "Content-Range" not in resp.headers


async def test_multiple_ranges_are_multipart_byteranges(world: World, start_app: StartApp) -> None:
    """Several ranges answer multipart/byteranges with an exact length and exact part bytes."""
    app, path = await small_app(world, start_app)
    header = "bytes=0-9, 4090-4100,-5, 30000-30000"
    resp = await app.client.get(path, headers={"Range": header})
    assert resp.status == 206
    body = await resp.read()
    assert resp.headers["Content-Length"] == str(len(body))
    assert "Content-Range" not in resp.headers
    parts = parse_multipart(body, resp.headers["Content-Type"])
    wanted = [(0, 9), (4090, 4100), (SIZE - 5, SIZE - 1), (30000, 30000)]
    assert [(ctype, crange) for ctype, crange, _ in parts] == [
        ("application/octet-stream", f"bytes {a}-{b}/{SIZE}") for a, b in wanted
    ]
    assert [data for _, _, data in parts] == [expected(SEED, a, b) for a, b in wanted]
    assert_requests_within(world, wanted, 4096)


async def test_range_boundaries_with_real_1mib_blocks(world: World, start_app: StartApp) -> None:
    """Files of exactly 1, 2 and 3 MiB stream byte-exact across 1 MiB boundaries with 1 MiB blocks."""
    paths = {}
    for k in (1, 2, 3):
        _f, msg_id = world.store(SyntheticContent(k * MIB, seed=k), name=f"{k}mib.bin")
        paths[k] = msg_id
    app = await start_app(world)
    for k, msg_id in paths.items():
        size = k * MIB
        path = app.dl_path(msg_id, f"{k}mib.bin")
        resp = await app.client.get(path)
        assert resp.status == 200
        assert await resp.read() == expected(k, 0, size - 1)
        for header, first, last in [
            ("bytes=0-0", 0, 0),
            (f"bytes={MIB - 1}-{MIB}", MIB - 1, MIB),
            ("bytes=-1", size - 1, size - 1),
            (f"bytes={size - MIB}-", size - MIB, size - 1),
            (f"bytes={MIB - 4096}-{size - 1}", MIB - 4096, size - 1),
        ]:
            if last >= size:
                continue
            resp = await app.client.get(path, headers={"Range": header})
            assert resp.status == 206, header
            assert await resp.read() == expected(k, first, last), (k, header)
    # Every request is 1 MiB or smaller and never crosses a 1 MiB boundary (autouse check).
    assert max(c.limit or 0 for c in world.telegram.getfile_calls()) == MIB


async def test_boundary_range_asks_exactly_two_small_blocks(
    world: World, start_app: StartApp
) -> None:
    """bytes=1048575-1048576 costs two 4 KiB requests, one on each side of the boundary."""
    _f, msg_id = world.store(SyntheticContent(2 * MIB, seed=3), name="two.bin")
    app = await start_app(world)
    resp = await app.client.get(app.dl_path(msg_id), headers={"Range": f"bytes={MIB - 1}-{MIB}"})
    assert await resp.read() == expected(3, MIB - 1, MIB)
    calls = [(c.offset, c.limit) for c in world.telegram.getfile_calls()]
    assert calls == [(MIB - 4096, 4096), (MIB, 4096)]


async def test_three_concurrent_ranges_join_to_the_file(world: World, start_app: StartApp) -> None:
    """aiohttp's round trip: three concurrent range requests, joined, equal the whole file."""
    app, path = await small_app(world, start_app)
    cuts = [(0, 16_000), (16_001, 33_333), (33_334, SIZE - 1)]

    async def fetch(first: int, last: int) -> bytes:
        resp = await app.client.get(path, headers={"Range": f"bytes={first}-{last}"})
        assert resp.status == 206
        return await resp.read()

    bodies = await asyncio.gather(*(fetch(a, b) for a, b in cuts))
    assert b"".join(bodies) == expected(SEED, 0, SIZE - 1)


# ----------------------------------------------------------------------------- sizes


async def test_empty_file(world: World, start_app: StartApp) -> None:
    """A 0-byte file answers 200 with an empty body to GET, Range and HEAD, without GetFile."""
    _f, msg_id = world.store(SyntheticContent(0, seed=1), name="empty.txt")
    app = await start_app(world)
    path = app.dl_path(msg_id, "empty.txt")
    for method, headers in [("GET", {}), ("GET", {"Range": "bytes=0-"}), ("HEAD", {})]:
        resp = await app.client.request(method, path, headers=headers)
        assert resp.status == 200
        assert resp.headers["Content-Length"] == "0"
        assert await resp.read() == b""
    assert world.telegram.count("upload.GetFile") == 0


async def test_one_byte_file(world: World, start_app: StartApp) -> None:
    """A 1-byte file serves its byte to GET, bytes=0-0 and bytes=-1, and 416 to bytes=1-."""
    _f, msg_id = world.store(SyntheticContent(1, seed=5), name="one.bin")
    app = await start_app(world, **SMALL_BLOCKS)
    path = app.dl_path(msg_id, "one.bin")
    byte = expected(5, 0, 0)
    resp = await app.client.get(path)
    assert (resp.status, await resp.read()) == (200, byte)
    for header in ("bytes=0-0", "bytes=-1", "bytes=0-"):
        resp = await app.client.get(path, headers={"Range": header})
        assert (resp.status, await resp.read()) == (206, byte)
        assert resp.headers["Content-Range"] == "bytes 0-0/1"
    resp = await app.client.get(path, headers={"Range": "bytes=1-"})
    assert resp.status == 416
    assert resp.headers["Content-Range"] == "bytes */1"


# ----------------------------------------------------------------------------- validators


async def test_validators_are_identical_on_200_206_304_and_head(
    world: World, start_app: StartApp
) -> None:
    """The strong ETag and Last-Modified are the same on 200, 206, 304 and HEAD."""
    app, path = await small_app(world, start_app)
    full = await app.client.get(path)
    await full.read()
    etag, last_modified = full.headers["ETag"], full.headers["Last-Modified"]
    assert etag.startswith('"')
    assert hs.parse_http_date(last_modified) is not None
    partial = await app.client.get(path, headers={"Range": "bytes=1-2"})
    await partial.read()
    not_modified = await app.client.get(path, headers={"If-None-Match": etag})
    head = await app.client.head(path)
    for resp in (partial, not_modified, head):
        assert resp.headers["ETag"] == etag
        assert resp.headers["Last-Modified"] == last_modified
    assert (partial.status, not_modified.status, head.status) == (206, 304, 200)


async def test_last_modified_is_the_message_date(world: World, start_app: StartApp) -> None:
    """Last-Modified is the storage message's date."""
    _f, msg_id = world.store(SyntheticContent(10, seed=1), name="a.txt")
    world.telegram.messages[(world.channel.chat_id, msg_id)].date = 1_700_000_000
    app = await start_app(world)
    resp = await app.client.head(app.dl_path(msg_id))
    assert resp.headers["Last-Modified"] == "Tue, 14 Nov 2023 22:13:20 GMT"


async def validators(app: Running, path: str) -> tuple[str, datetime]:
    resp = await app.client.head(path)
    date = hs.parse_http_date(resp.headers["Last-Modified"])
    assert date is not None
    return resp.headers["ETag"], date


async def test_preconditions(world: World, start_app: StartApp) -> None:
    """If-Match / If-Unmodified-Since fail with 412; If-None-Match / If-Modified-Since give 304."""
    app, path = await small_app(world, start_app)
    etag, date = await validators(app, path)
    before, after = hs.http_date(date - timedelta(days=1)), hs.http_date(date + timedelta(days=1))
    cases: list[tuple[Mapping[str, str], int]] = [
        ({"If-Match": '"other"'}, 412),
        ({"If-Match": f"W/{etag}"}, 412),  # If-Match uses the strong comparison
        ({"If-Match": etag}, 200),
        ({"If-Match": "*"}, 200),
        ({"If-Unmodified-Since": before}, 412),
        ({"If-Unmodified-Since": hs.http_date(date)}, 200),
        ({"If-None-Match": etag}, 304),
        ({"If-None-Match": f'"x", W/{etag}'}, 304),  # weak comparison
        ({"If-None-Match": "*"}, 304),
        ({"If-None-Match": '"other"'}, 200),
        ({"If-Modified-Since": hs.http_date(date)}, 304),
        ({"If-Modified-Since": after}, 304),
        ({"If-Modified-Since": before}, 200),
        ({"If-Modified-Since": "not a date"}, 200),
        ({"If-None-Match": '"other"', "If-Modified-Since": after}, 200),  # INM wins
    ]
    for headers, status in cases:
        resp = await app.client.get(path, headers=headers)
        body = await resp.read()
        assert resp.status == status, headers
        if status == 200:
            assert body == expected(SEED, 0, SIZE - 1)
        elif status == 304:
            assert body == b""
            assert resp.headers["ETag"] == etag
        else:
            assert body.decode().count("\n") == 1


async def test_if_range(world: World, start_app: StartApp) -> None:
    """If-Range honours the Range only for the strong ETag or the exact date; else full 200."""
    app, path = await small_app(world, start_app)
    etag, date = await validators(app, path)
    cases = [
        (etag, 206),
        (hs.http_date(date), 206),
        (f"W/{etag}", 200),
        ('"different"', 200),
        (hs.http_date(date + timedelta(seconds=1)), 200),
        (hs.http_date(date - timedelta(seconds=1)), 200),
        ("garbage", 200),
    ]
    for if_range, status in cases:
        resp = await app.client.get(path, headers={"Range": "bytes=10-19", "If-Range": if_range})
        body = await resp.read()
        assert resp.status == status, if_range
        assert body == (expected(SEED, 10, 19) if status == 206 else expected(SEED, 0, SIZE - 1))


async def test_head_sends_headers_and_never_touches_getfile(
    world: World, start_app: StartApp
) -> None:
    """HEAD (with or without Range) answers the 200 headers and makes zero GetFile requests."""
    app, path = await small_app(world, start_app)
    for headers in ({}, {"Range": "bytes=0-10"}, {"Range": "bytes=-0"}):
        resp = await app.client.head(path, headers=headers)
        assert resp.status == 200
        assert resp.headers["Content-Length"] == str(SIZE)
        assert resp.headers["Accept-Ranges"] == "bytes"
        assert "Content-Range" not in resp.headers
        assert await resp.read() == b""
    assert world.telegram.count("upload.GetFile") == 0
    assert world.telegram.getfile_calls() == []


# ----------------------------------------------------------------------------- content headers


@pytest.mark.parametrize(
    ("name", "mime", "content_type", "disposition"),
    [
        ("movie.mp4", "video/mp4", "video/mp4", "inline"),
        ("song.mp3", "audio/mpeg", "audio/mpeg", "inline"),
        ("pic.png", "image/png", "image/png", "inline"),
        ("doc.pdf", "application/pdf", "application/pdf", "inline"),
        ("pack.zip", "application/zip", "application/zip", "attachment"),
        ("logo.svg", "image/svg+xml", "image/svg+xml", "attachment"),
        ("report.pdf", "", "application/pdf", "inline"),  # no Telegram mime: guessed from name
        ("blob", "", "application/octet-stream", "attachment"),  # nothing to guess from
    ],
)
async def test_content_type_and_disposition(
    world: World, start_app: StartApp, name: str, mime: str, content_type: str, disposition: str
) -> None:
    """Content-Type comes from Telegram, else the name, else octet-stream; inline only for media."""
    f = world.telegram.add_file(SyntheticContent(100, seed=2), name=name, mime_type=mime)
    msg_id = world.telegram.post_file(world.channel, f)
    app = await start_app(world)
    resp = await app.client.get(app.dl_path(msg_id, name))
    assert await resp.read() == expected(2, 0, 99)
    assert resp.headers["Content-Type"] == content_type
    assert (
        resp.headers["Content-Disposition"]
        == f"{disposition}; filename=\"{name}\"; filename*=UTF-8''{name}"
    )
    forced = await app.client.get(app.dl_path(msg_id, name) + "?download=1")
    await forced.read()
    assert forced.headers["Content-Disposition"].startswith("attachment;")


async def test_non_ascii_name(world: World, start_app: StartApp) -> None:
    """A non-ASCII name gets an ASCII fallback and a UTF-8 filename*, both in one ASCII header."""
    name = "Фильм “2024” ✓.mp4"
    _f, msg_id = world.store(SyntheticContent(100, seed=2), name=name, mime_type="video/mp4")
    app = await start_app(world)
    resp = await app.client.get(app.dl_path(msg_id, name))
    assert await resp.read() == expected(2, 0, 99)
    value = resp.headers["Content-Disposition"]
    assert value.isascii()
    assert value == hs.content_disposition(name, attachment=False)
    assert value.startswith('inline; filename="_____ _2024_ _.mp4"; ')
    assert "filename*=UTF-8''%D0%A4%D0%B8%D0%BB%D1%8C%D0%BC" in value


# ----------------------------------------------------------------------------- links


async def test_wrong_or_missing_name_segment_still_serves_stored_name(
    world: World, start_app: StartApp
) -> None:
    """The name in the URL is cosmetic: a wrong or missing one serves the file under its stored name."""
    app, path = await small_app(world, start_app)
    token = path.split("/")[2]
    for url in (f"/dl/{token}/other-name.txt", f"/dl/{token}", f"/dl/{token}/", f"/dl/{token}/a/b"):
        resp = await app.client.get(url)
        assert resp.status == 200, url
        assert await resp.read() == expected(SEED, 0, SIZE - 1)
        assert 'filename="clip.bin"' in resp.headers["Content-Disposition"]


async def test_forged_and_altered_tokens_get_403(world: World, start_app: StartApp) -> None:
    """A forged, altered or garbage token gets 403 with a one-line plain-text reason."""
    app, path = await small_app(world, start_app)
    token = path.split("/")[2]
    altered = token[:-1] + ("A" if token[-1] != "A" else "B")
    forged = links.sign(links.LinkClaims(1), b"another-secret-0123456789abcdefgh")
    for bad in (altered, forged, "x", "%00", "A" * 500):
        resp = await app.client.get(f"/dl/{bad}/clip.bin")
        text = await resp.text()
        assert resp.status == 403, bad
        assert resp.content_type == "text/plain"
        assert text == "This link is not valid.\n"
        assert LINK_SECRET.decode() not in text
    assert world.telegram.count("upload.GetFile") == 0


async def test_expired_link_gets_410(world: World, start_app: StartApp) -> None:
    """An authentic but expired link gets 410 with a one-line reason; an unexpired one serves."""
    _f, msg_id = world.store(SyntheticContent(10, seed=1), name="a.txt")
    app = await start_app(world)
    now = int(datetime.now(UTC).timestamp())
    resp = await app.client.get(app.dl_path(msg_id, "a.txt", expires_at=now - 1))
    assert resp.status == 410
    assert await resp.text() == "This link has expired.\n"
    resp = await app.client.get(app.dl_path(msg_id, "a.txt", expires_at=now + 3600))
    assert resp.status == 200
    assert await resp.read() == expected(1, 0, 9)


async def test_missing_message_is_404(world: World, start_app: StartApp) -> None:
    """A valid link to a deleted storage message gets a one-line 404."""
    _f, msg_id = world.store(SyntheticContent(10, seed=1), name="a.txt")
    world.telegram.delete_message(world.channel, msg_id)
    app = await start_app(world)
    resp = await app.client.get(app.dl_path(msg_id))
    assert resp.status == 404
    assert await resp.text() == "This file is no longer available.\n"


# ----------------------------------------------------------------------------- connections


async def test_keep_alive_survives_206_and_416(world: World, start_app: StartApp) -> None:
    """Several requests, including a 206 and a 416, reuse one HTTP connection."""
    app, path = await small_app(world, start_app)
    created = reused = 0

    async def on_create(*_: object) -> None:
        nonlocal created
        created += 1

    async def on_reuse(*_: object) -> None:
        nonlocal reused
        reused += 1

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_create)
    trace.on_connection_reuseconn.append(on_reuse)
    url = app.client.make_url(path)
    requests = [
        ({"Range": "bytes=0-99"}, 206, expected(SEED, 0, 99)),
        ({"Range": f"bytes={SIZE}-"}, 416, None),
        ({"Range": "bytes=5-9"}, 206, expected(SEED, 5, 9)),
        ({"Range": "bytes=0-9,20-29"}, 206, None),
        ({}, 200, expected(SEED, 0, SIZE - 1)),
        ({"Range": "bytes=-0"}, 416, None),
        ({"Range": "bytes=-3"}, 206, expected(SEED, SIZE - 3, SIZE - 1)),
    ]
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as session:
        for headers, status, body in requests:
            async with session.get(url, headers=headers) as resp:
                data = await resp.read()
                assert resp.status == status
                assert "close" not in resp.headers.get("Connection", "").lower()
                if body is not None:
                    assert data == body
    assert (created, reused) == (1, len(requests) - 1)
