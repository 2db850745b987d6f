"""Bot claims: which live node may log in which bot (pure rules; the stores' part is in test_store)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streambot.botclaims import (
    NODE_ID_FILE,
    STALE_SECONDS,
    BotClaim,
    BotsInUse,
    conflicts,
    this_node,
)
from streambot.fleet import bot_id

NOW = 10_000.0


@pytest.mark.parametrize(
    ("rows", "conflicting"),
    [
        ([], []),
        ([BotClaim("1", "me", "h:/me", NOW)], []),  # our own claim (a restart of this node)
        ([BotClaim("1", "other", "h:/other", NOW - 5)], ["1"]),
        ([BotClaim("1", "other", "h:/other", NOW - STALE_SECONDS + 0.5)], ["1"]),
        ([BotClaim("1", "other", "h:/other", NOW - STALE_SECONDS)], []),  # gone: its claim expired
        ([BotClaim("1", "other", "h:/other", NOW + 3)], ["1"]),  # the other node's clock runs ahead
        (
            [
                BotClaim("9", "b", "h:/b", NOW),
                BotClaim("2", "me", "h:/me", NOW),
                BotClaim("5", "c", "h:/c", NOW - 1),
            ],
            ["5", "9"],
        ),
    ],
)
def test_conflicts_are_other_holders_live_claims(
    rows: list[BotClaim], conflicting: list[str]
) -> None:
    assert [c.bot_id for c in conflicts(rows, "me", NOW)] == conflicting


claims = st.builds(
    BotClaim,
    bot_id=st.text(alphabet="0123456789", min_size=1, max_size=4),
    holder=st.sampled_from(["me", "a", "b"]),
    place=st.sampled_from(["h:/x", "h:/y"]),  # the place never decides, the id does
    seen_at=st.floats(min_value=0, max_value=2 * NOW),
)


@given(st.lists(claims, max_size=20))
def test_conflicts_are_exactly_the_live_claims_of_other_holders(rows: list[BotClaim]) -> None:
    found = conflicts(rows, "me", NOW)
    for c in found:
        assert c.holder != "me"
        assert NOW - c.seen_at < STALE_SECONDS
    live_others = [r for r in rows if r.holder != "me" and NOW - r.seen_at < STALE_SECONDS]
    assert sorted(found, key=repr) == sorted(live_others, key=repr)


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("123456789:AAExampleExampleExampleExampleExam", "123456789"),
        ("1:x", "1"),
    ],
)
def test_bot_id_is_the_public_part_of_the_token(token: str, expected: str) -> None:
    assert bot_id(token) == expected


def test_the_refusal_names_bot_node_and_what_to_do() -> None:
    error = BotsInUse([BotClaim("123456789", "3f2a", "vps:/srv/streambot-a", NOW - 12.4)], NOW)
    text = str(error)
    assert "bot 123456789 by the node at vps:/srv/streambot-a (12 s ago)" in text
    assert "bot tokens of its own" in text
    assert f"expires {STALE_SECONDS:.0f} s after" in text


def test_a_node_is_its_data_dir_not_its_host_or_path(tmp_path: Path) -> None:
    """The id is made once, kept owner-only in DATA_DIR/node_id, and differs between folders."""
    first = this_node(tmp_path / "a")
    assert this_node(tmp_path / "a") == first
    assert (tmp_path / "a" / NODE_ID_FILE).read_text().strip() == first.id
    assert stat.S_IMODE((tmp_path / "a" / NODE_ID_FILE).stat().st_mode) == 0o600
    assert first.place.endswith(f":{(tmp_path / 'a').resolve()}")
    other = this_node(tmp_path / "b")
    assert other.id != first.id
    # A DATA_DIR moved (a recreated container, another mount point) is still the same node.
    (tmp_path / "a").rename(tmp_path / "moved")
    assert this_node(tmp_path / "moved").id == first.id
