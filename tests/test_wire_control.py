"""The wire simulator's control API, its pure parts: fault and limit validation, replies, stats."""

from __future__ import annotations

from typing import Any

import pytest

from streambot.simulator.telegram import SentMessage, SimulatedTelegram
from streambot.simulator.wire.control import (
    BadRequest,
    links_in,
    parse_fault,
    parse_limits,
    reply_json,
    request_stats,
)
from streambot.simulator.wire.info import InfoError, InfoFile, SimulatorInfo

TELEGRAM = SimulatedTelegram()
BOT = TELEGRAM.add_bot("control_test_bot")
DCS = frozenset({1, 2, 3, 4, 5})


def fault(body: Any) -> dict[str, Any]:
    return parse_fault(body, bots=TELEGRAM.bots, dcs=DCS)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"kind": "flood_wait", "seconds": 30},
            {"method": "upload.GetFile", "code": 420, "message": "FLOOD_WAIT_30", "count": 1},
        ),
        (
            {"kind": "rpc_error", "code": -503, "message": "TIMEOUT", "count": 2, "after": 3},
            {"code": -503, "message": "TIMEOUT", "count": 2, "after": 3},
        ),
        (
            {"kind": "file_reference_expired", "bot": BOT.bot_id, "dc": 4},
            {"code": 400, "message": "FILE_REFERENCE_EXPIRED", "bot": BOT.bot_id, "dc": 4},
        ),
        (
            {"kind": "file_migrate", "to_dc": 4, "method": "upload.GetFile"},
            {"code": 303, "message": "FILE_MIGRATE_4"},
        ),
        (
            {"kind": "flood_wait", "seconds": 5, "method": "channels.GetMessages"},
            {"method": "channels.GetMessages"},
        ),
        ({"kind": "bad_msg"}, {"method": "upload.GetFile", "code": 16, "count": 1}),
        ({"kind": "bad_msg", "code": 33, "count": 2}, {"code": 33, "count": 2}),
        (
            {"kind": "cdn_redirect", "count": 3, "after": 1},
            {"method": "upload.GetFile", "count": 3},
        ),
        ({"kind": "rst", "dc": 2, "count": None}, {"kind": "rst", "dc": 2, "count": None}),
        ({"kind": "stall"}, {"seconds": None, "count": 1}),
        ({"kind": "blackhole", "probability": 0.5}, {"probability": 0.5, "after": 0}),
        ({"kind": "stall", "seconds": 2.5}, {"seconds": 2.5}),
        ({"kind": "drip", "seconds": 1, "bot": BOT.bot_id}, {"bot": BOT.bot_id}),
    ],
)
def test_valid_faults_are_completed_with_defaults(
    body: dict[str, Any], expected: dict[str, Any]
) -> None:
    """Accepted faults name every field the world or the wire server needs."""
    parsed = fault(body)
    assert parsed.items() >= expected.items()
    assert parsed["probability"] > 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "JSON object"),
        ({}, "kind must be one of"),
        ({"kind": "meteor"}, "kind must be one of"),
        ({"kind": "rst", "colour": "red"}, "unknown field(s): colour"),
        ({"kind": "flood_wait"}, "needs seconds"),
        ({"kind": "flood_wait", "seconds": 1.5}, "whole number"),
        ({"kind": "flood_wait", "seconds": "10"}, "seconds must be a number"),
        ({"kind": "flood_wait", "seconds": 10, "method": "drop table"}, "method must be"),
        ({"kind": "rpc_error", "message": "X"}, "needs code"),
        ({"kind": "rpc_error", "code": 200, "message": "X"}, "needs code"),
        ({"kind": "rpc_error", "code": 500, "message": "lower case"}, "error id"),
        ({"kind": "file_migrate"}, "needs to_dc"),
        ({"kind": "file_migrate", "to_dc": 9}, "needs to_dc"),
        ({"kind": "rst", "bot": 1}, "no bot with id 1"),
        ({"kind": "rst", "dc": 7}, "dc must be one of"),
        ({"kind": "rst", "dc": True}, "dc must be an integer"),
        ({"kind": "rst", "count": 0}, "count must be at least 1"),
        ({"kind": "rst", "after": -1}, "after must be at least 0"),
        ({"kind": "rst", "probability": 1.5}, "probability must be between"),
        ({"kind": "rst", "probability": 0}, "above 0"),
        ({"kind": "rst", "method": "upload.GetFile"}, "does not apply"),
        ({"kind": "drip", "seconds": 0}, "above 0"),
        ({"kind": "rst", "seconds": 2}, "does not apply"),
        ({"kind": "file_reference_expired", "seconds": 3}, "does not apply"),
        ({"kind": "flood_wait", "seconds": 3, "code": 420}, "rpc_error and bad_msg faults only"),
        ({"kind": "flood_wait", "seconds": 3, "message": "X"}, "rpc_error faults only"),
        ({"kind": "bad_msg", "code": 48}, "code must be one of 16, 17, 32"),
        ({"kind": "bad_msg", "message": "X"}, "rpc_error faults only"),
        ({"kind": "cdn_redirect", "method": "channels.GetMessages"}, "upload.GetFile only"),
        ({"kind": "cdn_redirect", "seconds": 1}, "does not apply"),
        ({"kind": "rpc_error", "code": 500, "message": "X", "to_dc": 2}, "file_migrate"),
    ],
)
def test_bad_faults_are_refused_with_a_reason(body: Any, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason.replace("(", r"\(").replace(")", r"\)")):
        fault(body)


@pytest.mark.parametrize(
    ("body", "result"),
    [
        ({"rtt_ms": 50}, {"rtt_ms": 50.0}),
        ({"bandwidth_mib_s": 16.5}, {"bandwidth_mib_s": 16.5}),
        ({"rtt_ms": 0, "bandwidth_mib_s": 0}, {"rtt_ms": 0.0, "bandwidth_mib_s": 0.0}),
    ],
)
def test_limits_accept_non_negative_numbers(body: Any, result: dict[str, float]) -> None:
    assert parse_limits(body) == result


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({}, "give rtt_ms"),
        ({"rtt_ms": -1}, "between"),
        ({"rtt_ms": "50"}, "must be a number"),
        ({"rtt_ms": float("nan")}, "must be a number"),
        ({"rtt": 50}, "unknown field"),
        ("50", "JSON object"),
    ],
)
def test_bad_limits_are_refused_with_a_reason(body: Any, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason):
        parse_limits(body)


def test_replies_carry_text_buttons_and_links() -> None:
    """What GET /replies shows: links from the text and from URL buttons, callback data as is."""
    message = SentMessage(
        chat_id=5,
        bot_id=BOT.bot_id,
        message_id=9,
        text="Download: http://127.0.0.1:8080/dl/abc/a.mp4\nWatch: http://127.0.0.1:8080/watch/abc/a.mp4.",
        buttons=(("Watch", "http://127.0.0.1:8080/watch/abc/a.mp4"), ("Revoke", "revoke:1")),
    )
    assert links_in(message) == [
        "http://127.0.0.1:8080/dl/abc/a.mp4",
        "http://127.0.0.1:8080/watch/abc/a.mp4",
    ]
    out = reply_json(message)
    assert out["buttons"][1] == {"text": "Revoke", "target": "revoke:1"}
    assert out["media"] is False
    assert out["message_id"] == 9


def test_request_stats_are_by_method_and_by_bot() -> None:
    telegram = SimulatedTelegram()
    a, b = telegram.add_bot("a_bot"), telegram.add_bot("b_bot")
    telegram.bot_counts.update(
        {("upload.GetFile", a.bot_id): 3, ("upload.GetFile", b.bot_id): 1, ("help.GetConfig", 0): 2}
    )
    stats = request_stats(telegram)
    assert stats["total"] == 6
    assert stats["by_method"] == {"help.GetConfig": 2, "upload.GetFile": 4}
    assert stats["by_bot"][str(a.bot_id)] == {"upload.GetFile": 3}
    assert stats["by_bot"]["0"] == {"help.GetConfig": 2}
    assert stats["bots"][str(b.bot_id)] == "b_bot"


def test_info_file_round_trips_and_names_what_is_missing() -> None:
    info = SimulatorInfo(
        control_url="http://127.0.0.1:1234",
        dcs={1: ("127.0.0.1", 4001), 2: ("127.0.0.1", 4002)},
        api_id=1,
        api_hash="0" * 32,
        bot_token="7000000001:SIMxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        worker_tokens=("7000000002:SIMyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy",),
        bin_channel=-1003012345678,
        admin_id=100001,
        rsa_public_key="-----BEGIN RSA PUBLIC KEY-----\n...",
        files=(InfoFile("a.bin", 10, 1, 2), InfoFile("b.mp4", 20, 2, 4, path="/tmp/b.mp4")),
        media_dcs={2: ("127.0.0.1", 4102)},
    )
    data = info.to_json()
    assert data["dcs"] == {"1": "127.0.0.1:4001", "2": "127.0.0.1:4002"}
    assert data["media_dcs"] == {"2": "127.0.0.1:4102"}
    assert "path" not in data["files"][0]
    assert data["files"][1]["path"] == "/tmp/b.mp4"
    assert SimulatorInfo.from_json(data) == info
    for missing in ("control_url", "dcs", "rsa_public_key"):
        broken = {k: v for k, v in data.items() if k != missing}
        with pytest.raises(InfoError, match=f"{missing} is missing"):
            SimulatorInfo.from_json(broken)
    with pytest.raises(InfoError, match="wrong type"):
        SimulatorInfo.from_json({**data, "api_id": "one"})
