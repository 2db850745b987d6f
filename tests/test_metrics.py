"""/metrics: the Prometheus text exposition of streams, bytes, Telegram requests, errors, latency."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streambot.simulator import SyntheticContent
from streambot.simulator.world import World
from streambot.units import MIB

from .helpers import ABORTED, Running, StartApp, eventually, expected

SIZE = 40_000


async def scrape(app: Running) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels)."""
    resp = await app.client.get("/metrics")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_metrics_count_bytes_requests_errors_and_latency(
    world: World, start_app: StartApp
) -> None:
    """Bytes sent equal bytes received; GetFile, errors and latency are counted as they happen."""
    _f, msg_id = world.store(SyntheticContent(SIZE, seed=9), name="m.bin")
    app = await start_app(world, stream_block_size_kib=4)
    path = app.dl_path(msg_id)
    main = app.services.fleet.main.name
    received = 0
    for headers, status in [
        ({}, 200),
        ({"Range": "bytes=100-5000"}, 206),
        ({"Range": "bytes=0-0,-10"}, 206),  # multipart: the framing is body bytes too
        ({"Range": f"bytes={SIZE}-"}, 416),  # a one-line reason, not file bytes
    ]:
        resp = await app.client.get(path, headers=headers)
        body = await resp.read()
        assert resp.status == status
        if status != 416:
            received += len(body)
    await app.client.head(path)
    world.telegram.inject("upload.GetFile", code=400, message="FILE_REFERENCE_EXPIRED", skip=2)
    resp = await app.client.get(path)
    assert await resp.read() == expected(9, 0, SIZE - 1)
    received += SIZE

    samples = await scrape(app)
    assert samples[("streambot_active_streams", ())] == 0
    assert samples[("streambot_bytes_sent_total", ())] == received
    getfile = samples[
        ("streambot_telegram_requests_total", (("client", main), ("method", "upload.GetFile")))
    ]
    assert getfile == world.telegram.count("upload.GetFile")
    assert samples[("streambot_errors_total", (("kind", "file_reference_expired"),))] == 1
    latency = {
        labels: value
        for (name, labels), value in samples.items()
        if name == "streambot_request_latency_seconds_count"
    }
    assert latency[(("route", "dl"), ("status", "200"))] == 3  # two GETs and the HEAD
    assert latency[(("route", "dl"), ("status", "206"))] == 2
    assert latency[(("route", "dl"), ("status", "416"))] == 1


async def test_active_streams_gauge_follows_live_streams(world: World, start_app: StartApp) -> None:
    """streambot_active_streams shows a stream while it streams and drops when the viewer leaves."""
    _f, msg_id = world.store(SyntheticContent(512 * MIB, seed=9), name="big.bin")
    app = await start_app(world)
    resp = await app.client.get(app.dl_path(msg_id))
    assert await resp.content.readexactly(MIB) == expected(9, 0, MIB - 1)
    assert (await scrape(app))[("streambot_active_streams", ())] == 1
    resp.close()
    assert await app.services.registry.wait_idle(1.0)
    samples = await scrape(app)
    assert samples[("streambot_active_streams", ())] == 0
    disconnects = sum(
        value
        for (name, labels), value in samples.items()
        if name == "streambot_errors_total"
        and labels in ((("kind", "client_disconnect"),), (("kind", "cancelled"),))
    )
    assert disconnects == 1


@pytest.mark.parametrize(
    ("message", "kind"), [("FILE_ID_INVALID", "telegram"), ("FLOOD_WAIT_30", "flood_wait")]
)
async def test_aborted_stream_is_counted(
    world: World, start_app: StartApp, message: str, kind: str
) -> None:
    """A stream cut mid-body counts stream_aborted plus the Telegram error's own kind."""
    _f, msg_id = world.store(SyntheticContent(SIZE, seed=9), name="m.bin")
    app = await start_app(world, stream_block_size_kib=4, stream_max_wait_seconds=1.0)
    world.telegram.inject(
        "upload.GetFile", code=400 if kind == "telegram" else 420, message=message, skip=4
    )
    resp = await app.client.get(app.dl_path(msg_id))
    with pytest.raises(ABORTED):
        await resp.read()
    await eventually(lambda: len(app.services.registry) == 0)
    samples = await scrape(app)
    assert samples[("streambot_errors_total", (("kind", "stream_aborted"),))] == 1
    assert samples[("streambot_errors_total", (("kind", kind),))] == 1


METRICS_TOKEN = "metrics-token-0123456789abcdef"


async def test_metrics_is_open_without_a_metrics_token(world: World, start_app: StartApp) -> None:
    """The default: /metrics answers anyone (README says what it shows)."""
    app = await start_app(world)
    assert (await app.client.get("/metrics")).status == 200


async def test_metrics_token_protects_metrics(world: World, start_app: StartApp) -> None:
    """With METRICS_TOKEN, /metrics needs ``Authorization: Bearer <token>``: anything else is 401."""
    app = await start_app(world, metrics_token=METRICS_TOKEN)
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": f"Bearer {METRICS_TOKEN}x"},
        {"Authorization": f"Basic {METRICS_TOKEN}"},
    ):
        resp = await app.client.get("/metrics", headers=headers)
        assert resp.status == 401, headers
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        body = await resp.text()
        assert "streambot_" not in body
        assert METRICS_TOKEN not in body
    resp = await app.client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert resp.status == 200
    assert "streambot_bytes_sent_total" in await resp.text()
