"""The watch page in real headless Chromium: a moov-at-end MP4 loads, is seekable and seeks.

Debian's ``chromium`` is driven by Playwright for Python (never ``playwright install``); the MP4
is made by Debian's ``ffmpeg`` at test time. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streambot import links
from streambot.simulator import DiskContent

CHROMIUM = Path("/usr/bin/chromium")
FFMPEG = shutil.which("ffmpeg")
if not CHROMIUM.exists() or FFMPEG is None:
    pytest.skip(
        "needs Debian's chromium (/usr/bin/chromium) and ffmpeg: "
        "apt-get install -y chromium ffmpeg (.ci/run does this)",
        allow_module_level=True,
    )

pytest.importorskip(
    "playwright.async_api", reason="needs the browser extra: pip install -e '.[test,browser]'"
)

from playwright.async_api import (  # noqa: E402
    Browser,
    Page,
    Request,
    async_playwright,
    expect,
)

from .helpers import LINK_SECRET, Running, StartApp  # noqa: E402

# The flags from the shared HTTP notes that make Debian's Chromium work headless in a container.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
DURATION = 60
SEEK_TO = 45
STEP_MS = 30_000  # bound on each wait inside the page

# Waits for metadata, plays, seeks and reports what the element says; rejects on media errors
# and on timeouts so nothing hangs.
SEEK_SCRIPT = """
async ([seekTo, stepMs]) => {
  const v = document.getElementById("player");
  const wait = (name) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no " + name + " within " + stepMs + " ms")), stepMs);
    v.addEventListener(name, () => { clearTimeout(timer); resolve(); }, { once: true });
    v.addEventListener("error", () => {
      clearTimeout(timer);
      reject(new Error("media error " + (v.error && v.error.code)));
    }, { once: true });
  });
  v.muted = true;
  if (v.readyState < 1) { await wait("loadedmetadata"); }
  const before = {
    duration: v.duration,
    seekable: Array.from({ length: v.seekable.length }, (_, i) => [v.seekable.start(i), v.seekable.end(i)]),
  };
  await v.play();
  const seeked = wait("seeked");
  v.currentTime = seekTo;
  await seeked;
  v.pause();
  return { ...before, currentTime: v.currentTime, error: v.error ? v.error.code : null };
}
"""


# page.wait_for_function polls by eval(), which the page's CSP rightly forbids; an evaluated
# function that waits on the element's own event is not subject to it.
FIRST_FRAME_SCRIPT = """
(stepMs) => new Promise((resolve, reject) => {
  const v = document.getElementById("player");
  if (v.readyState >= 2) { resolve(); return; }
  const timer = setTimeout(() => reject(new Error("no loadeddata within " + stepMs + " ms")), stepMs);
  v.addEventListener("loadeddata", () => { clearTimeout(timer); resolve(); }, { once: true });
  v.addEventListener("error", () => { clearTimeout(timer); reject(new Error("media error")); }, { once: true });
})
"""


async def wait_for_first_frame(page: Page) -> None:
    await asyncio.wait_for(page.evaluate(FIRST_FRAME_SCRIPT, STEP_MS), timeout=2 * STEP_MS / 1000)


async def make_moov_at_end_mp4(path: Path) -> None:
    """60 s of H.264/AAC; ffmpeg's default muxing writes the moov index after the media data."""
    proc = await asyncio.create_subprocess_exec(
        FFMPEG or "ffmpeg",
        "-v", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=duration={DURATION}:size=640x360:rate=25",
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={DURATION}",
        "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "600k",
        "-c:a", "aac", "-b:a", "64k", "-shortest",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")


def top_level_boxes(path: Path) -> list[tuple[str, int]]:
    """(type, offset) of each top-level MP4 box."""
    boxes: list[tuple[str, int]] = []
    size_total = path.stat().st_size
    with path.open("rb") as f:
        offset = 0
        while offset < size_total:
            f.seek(offset)
            size, kind = struct.unpack(">I4s", f.read(8))
            if size == 1:
                (size,) = struct.unpack(">Q", f.read(8))
            elif size == 0:
                size = size_total - offset
            boxes.append((kind.decode("latin-1"), offset))
            offset += size
    return boxes


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield b
        finally:
            await b.close()


@dataclass(frozen=True)
class Movie:
    app: Running
    url: str  # the absolute watch page URL
    dl_path: str
    size: int


@pytest.fixture
async def movie(world, start_app: StartApp, tmp_path: Path) -> Movie:
    """The app serving a fresh moov-at-end MP4 and the URL of its watch page."""
    path = tmp_path / "movie.mp4"
    await make_moov_at_end_mp4(path)
    boxes = dict(top_level_boxes(path))
    assert boxes["moov"] > boxes["mdat"], "the test needs the index at the end of the file"
    _f, msg_id = world.store(DiskContent.of(path), name="movie.mp4", mime_type="video/mp4")
    app = await start_app(world)
    token = links.sign(links.LinkClaims(msg_id), LINK_SECRET)
    dl_path, watch_path = links.link_paths(token, "movie.mp4")
    url = str(app.client.make_url(watch_path))
    return Movie(app, url, dl_path, path.stat().st_size)


def watch_requests(page: Page, dl_path: str) -> list[str | None]:
    """Records the Range header of every request the page makes for the file."""
    seen: list[str | None] = []

    def on_request(request: Request) -> None:
        if request.url.split("?", 1)[0].endswith(dl_path):
            seen.append(request.headers.get("range"))

    page.on("request", on_request)
    return seen


def collect_csp_violations(page: Page) -> list[str]:
    messages: list[str] = []
    page.on(
        "console",
        lambda msg: messages.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    return messages


async def test_moov_at_end_mp4_plays_and_seeks(browser: Browser, movie: Movie) -> None:
    """The page loads the video, all 60 s are seekable, and a seek to 45 s lands there."""
    url, dl_path, size = movie.url, movie.dl_path, movie.size
    ARTIFACTS.mkdir(exist_ok=True)
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    await context.grant_permissions(["clipboard-read", "clipboard-write"])
    try:
        page = await context.new_page()
        page.set_default_timeout(STEP_MS)
        ranges = watch_requests(page, dl_path)
        violations = collect_csp_violations(page)
        response = await page.goto(url, wait_until="load")
        assert response is not None
        assert response.status == 200
        state = await asyncio.wait_for(
            page.evaluate(SEEK_SCRIPT, [SEEK_TO, STEP_MS]), timeout=3 * STEP_MS / 1000
        )

        assert abs(state["duration"] - DURATION) < 0.5
        assert len(state["seekable"]) == 1
        start, end = state["seekable"][0]
        assert start == 0
        assert end == pytest.approx(state["duration"], abs=0.01)
        assert state["currentTime"] >= SEEK_TO
        assert state["error"] is None

        # Chromium found the index at the end and then jumped into the middle: both are ranges.
        starts = [int(r.removeprefix("bytes=").split("-")[0]) for r in ranges if r]
        assert ranges
        assert all(r and r.startswith("bytes=") for r in ranges), ranges
        assert any(s > size // 2 for s in starts), ranges  # the moov near the end
        assert any(size // 4 < s < size for s in starts), ranges  # the seek target
        print(f"\nfile {size} bytes; Chromium's Range requests: {ranges}; state: {state}")

        # The inline script runs under the CSP: "Copy link" copies the direct link.
        await page.click("#copy")
        await expect(page.locator("#status")).to_have_text("Link copied.", timeout=STEP_MS)
        copied = await page.evaluate("navigator.clipboard.readText()")
        assert copied == await page.get_attribute("#copy", "data-url")
        assert copied.endswith(dl_path)
        # Off Android, mpv (no URL scheme on desktops) copies a command line instead.
        await page.click("#open-mpv")
        await expect(page.locator("#status")).to_have_text(
            re.compile("^mpv command copied"), timeout=STEP_MS
        )
        assert await page.evaluate("navigator.clipboard.readText()") == f"mpv {copied}"
        assert page.url == url
        assert violations == []

        await page.screenshot(path=str(ARTIFACTS / "watch-page.png"), full_page=True)
    finally:
        await context.close()


async def test_page_on_a_phone_and_in_dark_mode(browser: Browser, movie: Movie) -> None:
    """On an Android phone VLC opens by intent; light-phone and dark-desktop screenshots are saved."""
    url = movie.url
    ARTIFACTS.mkdir(exist_ok=True)
    phone = await browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        user_agent=(
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
            "(KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36"
        ),
    )
    try:
        page = await phone.new_page()
        page.set_default_timeout(STEP_MS)
        violations = collect_csp_violations(page)
        await page.goto(url, wait_until="load")
        await wait_for_first_frame(page)
        vlc = await page.get_attribute("#open-vlc", "href")
        assert vlc is not None
        assert vlc.startswith("intent://")
        assert "package=org.videolan.vlc" in vlc
        # Nothing overflows sideways on a narrow screen.
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        assert violations == []
        await page.screenshot(path=str(ARTIFACTS / "watch-page-phone.png"), full_page=True)
    finally:
        await phone.close()

    dark = await browser.new_context(viewport={"width": 1280, "height": 860}, color_scheme="dark")
    try:
        page = await dark.new_page()
        page.set_default_timeout(STEP_MS)
        await page.goto(url, wait_until="load")
        await wait_for_first_frame(page)
        background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(14, 16, 20)"
        await page.screenshot(path=str(ARTIFACTS / "watch-page-dark.png"), full_page=True)
    finally:
        await dark.close()


async def test_the_demo_sample_video_plays(
    world, start_app: StartApp, browser: Browser, tmp_path: Path
) -> None:
    """The first link a newcomer opens: the committed sample video loads, plays and advances."""
    from streambot.simulator.samples import SAMPLE_VIDEO

    _f, msg_id = world.store(
        DiskContent.of(SAMPLE_VIDEO), name=SAMPLE_VIDEO.name, mime_type="video/webm"
    )
    app = await start_app(world)
    token = links.sign(links.LinkClaims(msg_id), LINK_SECRET)
    _dl, watch_path = links.link_paths(token, SAMPLE_VIDEO.name)
    page = await browser.new_page()
    try:
        await page.goto(str(app.client.make_url(watch_path)))
        await wait_for_first_frame(page)
        played = await asyncio.wait_for(
            page.evaluate(PLAY_SCRIPT, STEP_MS), timeout=2 * STEP_MS / 1000
        )
    finally:
        await page.close()
    assert 7.5 < played["duration"] < 8.5
    assert played["currentTime"] > 0.5
    assert played["width"] == 320
    assert played["error"] is None


# Plays muted until 1 s of media time has passed (event driven, bounded), then reports.
PLAY_SCRIPT = """
async (stepMs) => {
  const v = document.getElementById("player");
  v.muted = true;
  await v.play();
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no progress within " + stepMs + " ms")), stepMs);
    const check = () => { if (v.currentTime > 1) { clearTimeout(timer); resolve(); } };
    v.addEventListener("timeupdate", check);
    v.addEventListener("error", () => { clearTimeout(timer); reject(new Error("media error")); });
  });
  v.pause();
  return { duration: v.duration, currentTime: v.currentTime, width: v.videoWidth,
           error: v.error && v.error.code };
}
"""
