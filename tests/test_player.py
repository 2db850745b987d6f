"""The /watch page: escaping, CSP, the element per type, its /dl source and its error pages."""

from __future__ import annotations

import re
import time
from html.parser import HTMLParser
from urllib.parse import urljoin

import pytest

from routes import player
from streambot import links
from streambot.simulator import SyntheticContent

from .helpers import LINK_SECRET, Running, StartApp

EVIL_NAME = "<script>alert(1)</script>.mp4"


def paths(message_id: int, name: str, expires_at: int | None = None) -> tuple[str, str]:
    token = links.sign(links.LinkClaims(message_id, expires_at), LINK_SECRET)
    return links.link_paths(token, name)


class Elements(HTMLParser):
    """Collects every start tag with its attributes, so tests look at the parsed page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def find(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for t, attrs in self.tags if t == tag]


def parse(body: str) -> Elements:
    parser = Elements()
    parser.feed(body)
    return parser


async def watch(app: Running, message_id: int, name: str) -> tuple[str, str, str]:
    """GET the watch page; returns (body, dl path, watch path)."""
    dl_path, watch_path = paths(message_id, name)
    resp = await app.client.get(watch_path)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    return await resp.text(), dl_path, watch_path


async def test_file_name_is_escaped_everywhere(world, start_app: StartApp) -> None:
    """A file named like a script tag appears only escaped; the only scripts are ours."""
    _f, msg_id = world.store(SyntheticContent(4096, seed=1), name=EVIL_NAME, mime_type="video/mp4")
    app = await start_app(world)
    body, _dl, _watch = await watch(app, msg_id, EVIL_NAME)
    assert "<script>alert(1)" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.mp4" in body
    scripts = parse(body).find("script")
    assert len(scripts) == 1
    assert "src" not in scripts[0]


async def test_csp_and_security_headers_with_nonce(world, start_app: StartApp) -> None:
    """The CSP allows only self media/images and the nonce, which the inline style/script carry."""
    _f, msg_id = world.store(SyntheticContent(4096, seed=1), name="a.mp4", mime_type="video/mp4")
    app = await start_app(world)
    _dl_path, watch_path = paths(msg_id, "a.mp4")
    resp = await app.client.get(watch_path)
    body = await resp.text()
    csp = resp.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["media-src"] == "'self'"
    assert directives["base-uri"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    match = re.fullmatch(r"'nonce-([A-Za-z0-9_-]{16,})'", directives["script-src"])
    assert match is not None
    nonce = match.group(1)
    assert directives["style-src"] == f"'nonce-{nonce}'"
    elements = parse(body)
    assert [s["nonce"] for s in elements.find("script")] == [nonce]
    assert [s["nonce"] for s in elements.find("style")] == [nonce]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["Cache-Control"] == "private, no-cache"
    # A fresh nonce per response: a leaked page gives no reusable script allowance.
    again = await app.client.get(watch_path)
    assert again.headers["Content-Security-Policy"] != csp
    # No inline handlers or style attributes: the CSP would block them.
    assert not re.search(r"\son[a-z]+=|\sstyle=", body)


@pytest.mark.parametrize(
    ("name", "mime", "element"),
    [
        ("movie.mp4", "video/mp4", "video"),
        ("song.mp3", "audio/mpeg", "audio"),
        ("photo.png", "image/png", "img"),
        ("archive.zip", "application/zip", None),
    ],
)
async def test_element_per_mime_type(
    world, start_app: StartApp, name: str, mime: str, element: str | None
) -> None:
    """Video, audio and images get their element with the /dl source; other files a card."""
    _f, msg_id = world.store(SyntheticContent(8192, seed=2), name=name, mime_type=mime)
    app = await start_app(world)
    body, dl_path, watch_path = await watch(app, msg_id, name)
    elements = parse(body)
    media = {tag: elements.find(tag) for tag in ("video", "audio", "img")}
    if element is None:
        assert not any(media.values())
        assert 'class="fileicon">ZIP<' in body
        assert 'id="open-vlc"' not in body  # no hand-off for files players cannot play
    else:
        assert [tag for tag, found in media.items() if found] == [element]
        src = media[element][0]["src"]
        assert src is not None
        assert urljoin(watch_path, src) == dl_path
        # And the source really serves the file, with ranges.
        resp = await app.client.get(urljoin(watch_path, src), headers={"Range": "bytes=0-9"})
        assert resp.status == 206
        assert len(await resp.read()) == 10
    download = [a for a in elements.find("a") if "download" in a]
    assert [urljoin(watch_path, a["href"] or "") for a in download] == [dl_path + "?download=1"]


async def test_links_are_relative_to_any_prefix(world, start_app: StartApp) -> None:
    """The page reaches /dl relatively, so a BASE_URL path prefix stripped by a proxy still works."""
    _f, msg_id = world.store(SyntheticContent(100, seed=3), name="m.mp4", mime_type="video/mp4")
    app = await start_app(world)
    body, dl_path, watch_path = await watch(app, msg_id, "m.mp4")
    src = parse(body).find("video")[0]["src"]
    assert src is not None
    assert not src.startswith("/")
    assert urljoin("https://example.com/prefix" + watch_path, src) == (
        "https://example.com/prefix" + dl_path
    )
    assert player.relative_root("/watch/T") == "../"
    assert player.relative_root("/watch/T/a%2Fb") == "../../"
    assert player.relative_root("/watch/T/a/b") == "../../../"


async def test_no_external_resources(world, start_app: StartApp) -> None:
    """Every absolute URL in the page is the file's own public link; nothing else is loaded."""
    _f, msg_id = world.store(SyntheticContent(100, seed=4), name="v.mp4", mime_type="video/mp4")
    app = await start_app(world)
    body, dl_path, _watch = await watch(app, msg_id, "v.mp4")
    own = app.settings.public_base_url + dl_path
    for url in re.findall(r"https?://[^\s\"'<>#]*", body):
        assert url == own
    assert "@import" not in body
    assert "url(" not in body
    assert not parse(body).find("link")


async def test_open_in_links_use_documented_forms(world, start_app: StartApp) -> None:
    """VLC gets vlc://URL, MX Player and mpv Chrome intents for their packages, mpv a command."""
    _f, msg_id = world.store(SyntheticContent(100, seed=5), name="v 1.mkv", mime_type="video/webm")
    app = await start_app(world)
    body, dl_path, _watch = await watch(app, msg_id, "v 1.mkv")
    url = app.settings.public_base_url + dl_path
    rest = url.split("://", 1)[1]
    anchors = {a.get("id"): a for a in parse(body).find("a") if a.get("id")}
    assert anchors["open-vlc"]["href"] == "vlc://" + url
    suffix = "type=video/webm;S.title=v%201.mkv;end"
    assert anchors["open-vlc"]["data-android"] == (
        f"intent://{rest}#Intent;scheme=http;package=org.videolan.vlc;{suffix}"
    )
    assert anchors["open-mx"]["href"] == (
        f"intent://{rest}#Intent;scheme=http;package=com.mxtech.videoplayer.ad;{suffix}"
    )
    assert anchors["open-mpv"]["href"] == (
        f"intent://{rest}#Intent;scheme=http;package=is.xyz.mpv;{suffix}"
    )
    assert anchors["open-mpv"]["data-command"] == f"mpv {url}"


def test_intent_type_rejects_odd_mime_types() -> None:
    """An uploader's odd MIME type cannot inject fields into the intent."""
    assert player.intent_mime("video/MP4; codecs=avc1") == "video/mp4"
    assert player.intent_mime("video/mp4;package=evil") == "video/mp4"
    assert player.intent_mime("x;end") == "video/*"


@pytest.mark.parametrize(
    ("kind", "status", "text"),
    [
        ("forged", 403, "This link is not valid."),
        ("expired", 410, "This link has expired."),
        ("missing", 404, "This file is no longer available."),
        ("revoked", 410, "This link was revoked."),
    ],
)
async def test_bad_links_get_an_error_page(
    world, start_app: StartApp, kind: str, status: int, text: str
) -> None:
    """Forged, expired, dangling and revoked links get /dl's status and sentence, as a page."""
    _f, msg_id = world.store(SyntheticContent(100, seed=6), name="x.mp4", mime_type="video/mp4")
    app = await start_app(world)
    if kind == "forged":
        token = links.sign(links.LinkClaims(msg_id), b"another-secret-0123456789abcdef")
        dl_path, watch_path = links.link_paths(token, "x.mp4")
    elif kind == "expired":
        dl_path, watch_path = paths(msg_id, "x.mp4", expires_at=int(time.time()) - 60)
    elif kind == "missing":
        dl_path, watch_path = paths(msg_id + 1000, "x.mp4")
    else:
        assert app.services.store is not None
        await app.services.store.revoke(msg_id, by=1)
        dl_path, watch_path = paths(msg_id, "x.mp4")
    dl = await app.client.get(dl_path)
    assert dl.status == status
    resp = await app.client.get(watch_path)
    assert resp.status == status
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "Content-Security-Policy" in resp.headers
    body = await resp.text()
    assert text in body
    assert text in await dl.text()
    assert not parse(body).find("video")


async def test_head_matches_get_without_body(world, start_app: StartApp) -> None:
    """HEAD answers like GET (status, type, length) with no body, for good and bad links."""
    _f, msg_id = world.store(SyntheticContent(100, seed=7), name="h.mp4", mime_type="video/mp4")
    app = await start_app(world)
    _dl, watch_path = paths(msg_id, "h.mp4")
    get = await app.client.get(watch_path)
    head = await app.client.head(watch_path)
    assert head.status == 200
    assert head.headers["Content-Type"] == "text/html; charset=utf-8"
    assert head.headers["Content-Length"] == str(len(await get.read()))
    assert await head.read() == b""
    bad = await app.client.head(watch_path.replace("/watch/", "/watch/x", 1))
    assert bad.status == 403
    assert await bad.read() == b""
