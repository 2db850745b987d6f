"""GET/HEAD ``/watch/<token>/<name>``: a self-contained page that plays, shows or offers a file.

The page never loads anything from another origin (it must work on a server without internet):
its style and script are inline, allowed by a per-response CSP nonce, and the only things it
fetches are the file itself, from ``/dl`` with the same token. Because the media element reads
``/dl``, the browser seeks with Range requests exactly as any player would.

Links inside the page are *relative* (``../../dl/<token>/<name>``): ``BASE_URL`` may carry a
path prefix that a reverse proxy strips, and a relative reference resolves correctly whatever
the prefix. Only the hand-offs to other apps need an absolute URL; those use the public base
URL, the same one the bot puts in its replies.

Hand-off to other players, in the forms those apps document:

* VLC: ``vlc://<url>`` (VLC for iOS; desktop VLC only with a URL handler installed); on
  Android the page script swaps in an intent for ``org.videolan.vlc``.
* MX Player: an Android intent for ``com.mxtech.videoplayer.ad`` (its intent definition:
  action VIEW, the URL as data, a ``title`` extra). Chrome's intent syntax is
  ``intent://<host/path>#Intent;scheme=<http|https>;package=…;type=…;end``.
* mpv: mpv-android (``is.xyz.mpv``) documents the same intent form. Desktop mpv registers no
  URL scheme (``mpv://`` exists only through third-party handlers), so off Android the button
  copies an ``mpv '<url>'`` command line instead of following a link that would do nothing.

Errors (forged, expired, revoked, missing, busy) come from :func:`routes.download.resolve`, so
the status and the sentence are the ones ``/dl`` gives, shown as a small page.
"""

from __future__ import annotations

import html
import logging
import re
import secrets
import shlex
import time
from dataclasses import dataclass
from importlib import resources
from string import Template
from urllib.parse import quote

from aiohttp import web

from routes import download, keys
from routes.errors import Refusal
from streambot import links
from streambot.catalog import FileInfo
from streambot.units import human_size

log = logging.getLogger(__name__)

VLC_ANDROID = "org.videolan.vlc"
MX_PLAYER = "com.mxtech.videoplayer.ad"
MPV_ANDROID = "is.xyz.mpv"

# A MIME type we are willing to put into an intent's ``type=`` field; anything else (the type
# comes from the uploader's client via Telegram) is replaced by a generic one.
_SAFE_MIME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]*/[A-Za-z0-9*][A-Za-z0-9.+-]*")


@dataclass(frozen=True, slots=True)
class Templates:
    """The page templates and the inline style/script, read once when the routes are added.

    ``layout`` is the frame every page shares (head, style, brand); ``page`` and ``error``
    are what goes inside it.
    """

    layout: Template
    page: Template
    error: Template
    style: str
    script: str

    def frame(self, *, title: str, content: str, nonce: str, script: bool) -> str:
        """``content`` inside the shared layout; ``title`` must already be HTML-escaped."""
        tag = f'<script nonce="{nonce}">{self.script}</script>' if script else ""
        return self.layout.substitute(
            title=title, content=content, nonce=nonce, style=self.style, script=tag
        )

    @classmethod
    def load(cls) -> Templates:
        folder = resources.files("routes").joinpath("templates")

        def read(name: str) -> str:
            return folder.joinpath(name).read_text(encoding="utf-8").rstrip("\n")

        return cls(
            layout=Template(read("layout.html") + "\n"),
            page=Template(read("watch.html")),
            error=Template(read("error.html")),
            style=read("watch.css"),
            script=read("watch.js"),
        )


def content_security_policy(nonce: str) -> str:
    """Nothing but our own media/images and the nonce-tagged inline style and script."""
    return "; ".join(
        (
            "default-src 'none'",
            "media-src 'self'",
            "img-src 'self'",
            f"style-src 'nonce-{nonce}'",
            f"script-src 'nonce-{nonce}'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


def page_headers(nonce: str) -> dict[str, str]:
    return {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": content_security_policy(nonce),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": download.CACHE_CONTROL,
        # The links are bearer secrets: keep the pages out of search engines and frames.
        "X-Robots-Tag": "noindex, nofollow",
        "X-Frame-Options": "DENY",
    }


def relative_root(raw_path: str) -> str:
    """The relative reference from the page at ``raw_path`` back to the site root.

    ``/watch/T/name`` lives in the directory ``/watch/T/``, two levels down, so the root is
    ``../../``. Counted on the raw path: an encoded ``%2F`` is not a separator for browsers.
    """
    return "../" * max(raw_path.count("/") - 1, 0)


def android_intent(url: str, package: str, mime: str, title: str) -> str:
    """Chrome's ``intent:`` URL that opens ``url`` (http/https) in ``package``."""
    scheme, _, rest = url.partition("://")
    return (
        f"intent://{rest}#Intent;scheme={scheme};package={package};type={mime};"
        f"S.title={quote(title, safe='')};end"
    )


def intent_mime(mime_type: str) -> str:
    essence = mime_type.split(";", 1)[0].strip().lower()
    return essence if _SAFE_MIME.fullmatch(essence) else "video/*"


def _media(info: FileInfo, src: str) -> str:
    """The element that shows the file; every inserted value is escaped."""
    mime = info.mime_type.lower()
    esc_src = html.escape(src)
    if mime.startswith("video/"):
        return (
            '    <div class="stage"><video id="player" controls playsinline preload="metadata" '
            f'src="{esc_src}"></video></div>'
        )
    if mime.startswith("audio/"):
        return (
            '    <div class="stage audio"><audio id="player" controls preload="metadata" '
            f'src="{esc_src}"></audio></div>'
        )
    if mime.startswith("image/"):
        return (
            f'    <div class="stage"><img id="picture" src="{esc_src}" '
            f'alt="{html.escape(info.name)}"></div>'
        )
    ext = info.name.rpartition(".")[2][:5].upper() if "." in info.name else "FILE"
    return f'    <div class="stage file"><div class="fileicon">{html.escape(ext)}</div></div>'


def _open_in(info: FileInfo, url: str) -> str:
    """Hand-off buttons for playable files (see the module docstring for the URL forms)."""
    mime = info.mime_type.lower()
    if not mime.startswith(("video/", "audio/")):
        return ""
    intent_type = intent_mime(info.mime_type)
    vlc = html.escape("vlc://" + url)
    vlc_android = html.escape(android_intent(url, VLC_ANDROID, intent_type, info.name))
    mx = html.escape(android_intent(url, MX_PLAYER, intent_type, info.name))
    mpv = html.escape(android_intent(url, MPV_ANDROID, intent_type, info.name))
    mpv_command = html.escape("mpv " + shlex.quote(url))
    return (
        '      <nav class="openin" aria-label="Open in another app">\n'
        '        <span class="label">Open in</span>\n'
        f'        <a class="btn" id="open-vlc" href="{vlc}" data-android="{vlc_android}">VLC</a>\n'
        f'        <a class="btn" id="open-mx" href="{mx}">MX Player <small>Android</small></a>\n'
        f'        <a class="btn" id="open-mpv" href="{mpv}" data-command="{mpv_command}">mpv</a>\n'
        "      </nav>"
    )


def render_page(
    templates: Templates,
    info: FileInfo,
    *,
    token: str,
    raw_path: str,
    base_url: str,
    nonce: str,
) -> str:
    """The watch page for ``info`` as seen at ``raw_path``; pure, so it is easy to test."""
    dl_path, _watch = links.link_paths(token, info.name)
    src = relative_root(raw_path) + dl_path.lstrip("/")
    absolute = base_url.rstrip("/") + dl_path
    name = html.escape(info.name)
    content = templates.page.substitute(
        media=_media(info, src),
        open_in=_open_in(info, absolute),
        name=name,
        size=html.escape(human_size(info.size)),
        size_bytes=str(info.size),
        mime=html.escape(info.mime_type),
        download_href=html.escape(src + "?download=1"),
        link=html.escape(absolute),
    )
    return templates.frame(title=name, content=content, nonce=nonce, script=True)


def render_error(templates: Templates, refusal: Refusal, *, nonce: str) -> str:
    heading = html.escape(refusal.heading)
    content = templates.error.substitute(
        status=str(refusal.status), heading=heading, reason=html.escape(refusal.sentence)
    )
    return templates.frame(title=heading, content=content, nonce=nonce, script=False)


class WatchPage:
    """The ``/watch`` handler, holding its templates (no module-level state)."""

    def __init__(self, templates: Templates) -> None:
        self._templates = templates

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        nonce = secrets.token_urlsafe(18)
        headers = page_headers(nonce)
        resolved = await download.resolve(request)
        if isinstance(resolved, Refusal):
            status = resolved.status
            body = render_error(self._templates, resolved, nonce=nonce)
            headers.update(resolved.headers)
        else:
            info = resolved.info
            status = 200
            body = render_page(
                self._templates,
                info,
                token=request.match_info["token"],
                raw_path=request.rel_url.raw_path,
                base_url=request.app[keys.SETTINGS].public_base_url,
                nonce=nonce,
            )
        metrics = request.app[keys.METRICS]
        elapsed = time.perf_counter() - started
        metrics.request_latency.labels(route="watch", status=str(status)).observe(elapsed)
        # For HEAD aiohttp sends these headers (Content-Length included) without the body.
        return web.Response(status=status, body=body.encode("utf-8"), headers=headers)


def add_routes(app: web.Application) -> None:
    page = WatchPage(Templates.load())
    for path in ("/watch/{token}", "/watch/{token}/{name:.*}"):
        app.router.add_route("GET", path, page.handle)
        app.router.add_route("HEAD", path, page.handle)
