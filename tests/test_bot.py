"""The bot, driven through the simulator's real update pipeline: files in, links out, commands, access."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from streambot.simulator import MEDIA_KINDS, SyntheticContent
from streambot.simulator.content import synthetic_bytes
from streambot.simulator.world import World, build_world

from .helpers import LINK_SECRET, Running, StartApp

LINK = re.compile(r"Download: (\S+)\nWatch: (\S+)")


async def say(app: Running, user, text: str = "", file=None, count: int = 1) -> list[str]:
    """Send one message as ``user`` and return the bot's next ``count`` replies."""
    tg = app.world.telegram
    before = len(tg.replies(user))
    await tg.send_user_message(user, app.world.main_bot, text=text, file=file)
    replies = await tg.wait_replies(user, before + count)
    return [r.text for r in replies[before:]]


def dl_path(reply: str) -> str:
    m = LINK.search(reply)
    assert m, reply
    return urlsplit(m.group(1)).path


@pytest.mark.parametrize("kind", MEDIA_KINDS)
async def test_each_media_kind_gets_working_links(world: World, start_app: StartApp, kind) -> None:
    """A user sends each media kind and the download link returns exactly the file's bytes."""
    app = await start_app(world)
    user = world.telegram.add_user("Alice")
    f = world.telegram.add_file(
        SyntheticContent(150_000, seed=11),
        name=f"x.{kind}",
        mime_type="application/x-test",
        kind=kind,
    )
    (reply,) = await say(app, user, file=f)
    assert "Watch: " in reply
    sent = world.telegram.replies(user)[-1]
    assert [label for label, _ in sent.buttons] == ["Download", "Watch"]
    resp = await app.client.get(dl_path(reply))
    assert resp.status == 200
    assert await resp.read() == synthetic_bytes(11, 0, 150_000)


async def test_same_file_reuses_stored_message(world: World, start_app: StartApp) -> None:
    """Sending the same file twice copies it into the channel once and gives the same link."""
    app = await start_app(world)
    user = world.telegram.add_user("Bob")
    f = world.telegram.add_file(SyntheticContent(1000, seed=3), name="a.zip")
    (first,) = await say(app, user, file=f)
    (second,) = await say(app, user, file=f)
    assert dl_path(first) == dl_path(second)
    assert world.telegram.count("messages.SendMedia") == 1


async def test_replies_are_sent_verbatim_not_parsed_as_markup(
    world: World, start_app: StartApp
) -> None:
    """Names and links reach the user exactly: "__", "--", "**" or tags are never eaten as markup.

    A link token may contain "__" or "--" (URL-safe base64); Markdown parsing would drop them
    from both URLs in a reply and break the link, as a name's own markup would be mangled.
    """
    app = await start_app(world)
    user = world.telegram.add_user("Mallory")
    name = "**bold** __it__ --u-- ~~s~~ ||sp|| `c` <b>tag</b>.txt"
    f = world.telegram.add_file(SyntheticContent(100, seed=2), name=name)
    (reply,) = await say(app, user, file=f)
    assert reply.splitlines()[0] == name
    resp = await app.client.get(dl_path(reply))
    assert resp.status == 200
    assert "__it__" in resp.headers["Content-Disposition"]


async def test_text_without_file_gets_help(world: World, start_app: StartApp) -> None:
    """A message with no file is answered with a short help text."""
    app = await start_app(world)
    user = world.telegram.add_user("Carol")
    (reply,) = await say(app, user, text="hello there")
    assert reply.startswith("There is no file in that message.")
    assert "Send me a file" in reply


@pytest.mark.parametrize(
    ("command", "admin_expect", "user_expect"),
    [
        ("/start", "Admin commands", "Send me a file"),
        ("/help", "Admin commands", "Send me a file"),
        ("/memory", "RSS", "for admins only"),
        ("/stats", "Served today", "for admins only"),
        ("/ban 5", "banned", "for admins only"),
        ("/frobnicate", "Unknown command", "Unknown command"),
        ("/usage", "Downloads of your files today", "Downloads of your files today"),
        ("/files", "not shared any files", "not shared any files"),
    ],
)
async def test_commands_answer_per_role(
    world: World, start_app: StartApp, command: str, admin_expect: str, user_expect: str
) -> None:
    """Each command answers admins and ordinary users appropriately, never with silence."""
    app = await start_app(world)
    user = world.telegram.add_user("Dave")
    (admin_reply,) = await say(app, world.admin, text=command)
    (user_reply,) = await say(app, user, text=command)
    assert admin_expect in admin_reply
    assert user_expect in user_reply
    assert "Admin commands" not in user_reply


async def test_allowed_users_restricts_link_creation(world: World, start_app: StartApp) -> None:
    """With ALLOWED_USERS set, others get one clear refusal and nothing is stored."""
    allowed = world.telegram.add_user("Erin")
    stranger = world.telegram.add_user("Frank")
    app = await start_app(world, allowed_users=(allowed.user_id,))
    f = world.telegram.add_file(SyntheticContent(100, seed=1), name="a.bin")
    (refusal,) = await say(app, stranger, file=f)
    assert "private" in refusal
    (ok,) = await say(app, allowed, file=f)
    assert "Download: " in ok
    assert world.telegram.count("messages.SendMedia") == 1


async def test_ban_persists_across_restart(tmp_path, start_app: StartApp) -> None:
    """A ban made by an admin still applies after the application restarts on the same data dir."""
    world = build_world()
    user = world.telegram.add_user("Grace")
    app = await start_app(world, data_dir=tmp_path / "shared")
    (reply,) = await say(app, world.admin, text=f"/ban {user.user_id}")
    assert "now banned" in reply
    await app.client.close()

    app2 = await start_app(world, data_dir=tmp_path / "shared")
    f = world.telegram.add_file(SyntheticContent(100, seed=1), name="a.bin")
    (refusal,) = await say(app2, user, file=f)
    assert refusal == "You are banned from using this bot."
    (unban,) = await say(app2, world.admin, text=f"/unban {user.user_id}")
    assert "no longer banned" in unban
    (ok,) = await say(app2, user, file=f)
    assert "Download: " in ok


async def test_link_rate_limit_answers_with_wait_time(world: World, start_app: StartApp) -> None:
    """Past LINKS_PER_USER_PER_HOUR a user is told how many minutes to wait; admins are exempt."""
    app = await start_app(world, links_per_user_per_hour=2)
    user = world.telegram.add_user("Heidi")
    for seed in (1, 2):
        f = world.telegram.add_file(SyntheticContent(100, seed=seed), name=f"{seed}.bin")
        (reply,) = await say(app, user, file=f)
        assert "Download: " in reply
    f = world.telegram.add_file(SyntheticContent(100, seed=3), name="3.bin")
    (limited,) = await say(app, user, file=f)
    assert re.search(r"try again in \d+ minutes?", limited)
    for seed in (4, 5, 6):
        f = world.telegram.add_file(SyntheticContent(100, seed=seed), name=f"{seed}.bin")
        (reply,) = await say(app, world.admin, file=f)
        assert "Download: " in reply


async def test_copy_errors_are_told_in_one_sentence(world: World, start_app: StartApp) -> None:
    """A FloodWait or an inaccessible channel while copying is told to the user; others are served."""
    app = await start_app(world)
    user = world.telegram.add_user("Ivan")
    world.telegram.flood_wait(30, method="messages.SendMedia")
    f = world.telegram.add_file(SyntheticContent(100, seed=1), name="a.bin")
    (reply,) = await say(app, user, file=f)
    assert "again in 30 seconds" in reply
    world.telegram.inject("messages.SendMedia", code=403, message="CHAT_WRITE_FORBIDDEN")
    (reply,) = await say(app, user, file=f)
    assert "storage channel is not accessible" in reply
    (ok,) = await say(app, user, file=f)
    assert "Download: " in ok


async def test_issue_11_copy_answered_without_a_message_is_told_not_crashed(
    world: World, start_app: StartApp
) -> None:
    """Telegram accepting the copy but returning no message gets a clear reply, then works again."""
    app = await start_app(world)
    user = world.telegram.add_user("Oscar")
    world.telegram.inject("messages.SendMedia", kind="no_message")
    f = world.telegram.add_file(SyntheticContent(100, seed=1), name="a.bin")
    (reply,) = await say(app, user, file=f)
    assert reply == "Telegram did not confirm storing your file; please send it again."
    assert await app.services.store.count_files(user.user_id) == 0
    (ok,) = await say(app, user, file=f)
    assert "Download: " in ok
    assert await app.services.store.count_files(user.user_id) == 1


async def test_revoke_by_command_then_http_410(world: World, start_app: StartApp) -> None:
    """/revoke <link> by the owner makes the link answer 410; others cannot revoke it."""
    app = await start_app(world)
    owner = world.telegram.add_user("Judy")
    other = world.telegram.add_user("Mallory")
    f = world.telegram.add_file(SyntheticContent(100, seed=1), name="a.bin")
    (reply,) = await say(app, owner, file=f)
    url = LINK.search(reply).group(1)
    assert (await app.client.get(dl_path(reply))).status == 200
    (denied,) = await say(app, other, text=f"/revoke {url}")
    assert "only revoke links to your own files" in denied
    (done,) = await say(app, owner, text=f"/revoke {url}")
    assert "now revoked" in done
    resp = await app.client.get(dl_path(reply))
    assert resp.status == 410
    assert (await resp.text()).strip() == "This link was revoked."


async def test_sending_a_revoked_file_again_gives_a_fresh_link(
    world: World, start_app: StartApp
) -> None:
    """After /revoke, re-sending the file gives a new working link the owner can list and revoke."""
    app = await start_app(world)
    owner = world.telegram.add_user("Heidi")
    f = world.telegram.add_file(SyntheticContent(100, seed=4), name="a.bin")
    (reply,) = await say(app, owner, file=f)
    old_url = LINK.search(reply).group(1)
    (done,) = await say(app, owner, text=f"/revoke {old_url}")
    assert "now revoked" in done

    (again,) = await say(app, owner, file=f)
    new_url = LINK.search(again).group(1)
    assert new_url != old_url
    assert (await app.client.get(dl_path(reply))).status == 410
    resp = await app.client.get(dl_path(again))
    assert (resp.status, await resp.read()) == (200, synthetic_bytes(4, 0, 100))
    (listing,) = await say(app, owner, text="/files")
    assert "a.bin" in listing
    assert "revoked" not in listing
    (done,) = await say(app, owner, text=f"/revoke {new_url}")
    assert "now revoked" in done
    assert (await app.client.get(dl_path(again))).status == 410


async def test_files_lists_pages_and_revoke_button(world: World, start_app: StartApp) -> None:
    """/files pages through the user's files with buttons; the revoke button kills the link."""
    app = await start_app(world)
    tg = world.telegram
    user = tg.add_user("Niaj")
    paths = []
    for seed in range(1, 8):
        f = tg.add_file(SyntheticContent(100 + seed, seed=seed), name=f"f{seed}.bin")
        (reply,) = await say(app, user, file=f)
        paths.append(dl_path(reply))
    (listing,) = await say(app, user, text="/files")
    assert "page 1 of 2" in listing
    sent = tg.replies(user)[-1]
    labels = [label for label, _ in sent.buttons]
    assert "Next »" in labels
    assert labels.count("Revoke 1") == 1
    before = len(tg.replies(user))
    await tg.press_button(user, world.main_bot, sent, dict(sent.buttons)["Next »"])
    page2 = await tg.wait_replies(user, before + 1)
    assert "page 2 of 2" in page2[-1].text
    # Newest first: "Revoke 1" on page 1 is the last file sent.
    before = len(tg.replies(user))
    await tg.press_button(user, world.main_bot, sent, dict(sent.buttons)["Revoke 1"])
    await tg.wait_replies(user, before + 1)
    assert (await app.client.get(paths[-1])).status == 410
    assert (await app.client.get(paths[0])).status == 200


async def test_worker_without_channel_access_is_left_out_and_reported(
    start_app: StartApp,
) -> None:
    """A worker bot that cannot read BIN_CHANNEL is excluded, and the admins are told which one."""
    world = build_world(workers=2)
    world.telegram.deny(world.channel, world.workers[1])
    # The admin must have talked to the bot for it to be able to message them.
    world.telegram._seen.add((world.main_bot.bot_id, world.admin.user_id))
    app = await start_app(world)
    states = {fc.name: fc.state.value for fc in app.services.fleet.clients}
    assert sorted(states.values()) == ["healthy", "healthy", "no_access"]
    notes = [r.text for r in world.telegram.replies(world.admin)]
    assert any(f"@{world.workers[1].username}" in n and "admin of the channel" in n for n in notes)


async def test_link_ttl_puts_an_expiry_in_new_links(world: World, start_app: StartApp) -> None:
    """With LINK_TTL_HOURS set, new links carry an expiry after which they answer 410."""
    import time

    from streambot import links

    app = await start_app(world, link_ttl_hours=2)
    user = world.telegram.add_user("Olivia")
    f = world.telegram.add_file(SyntheticContent(100, seed=1), name="a.bin")
    (reply,) = await say(app, user, file=f)
    token = dl_path(reply).split("/")[2]
    claims = links.verify(token, LINK_SECRET, now=time.time())
    assert claims.expires_at is not None
    assert 7190 <= claims.expires_at - time.time() <= 7200
    with pytest.raises(links.ExpiredLink):
        links.verify(token, LINK_SECRET, now=claims.expires_at)
    assert (await app.client.get(dl_path(reply))).status == 200


async def test_stats_shows_streams_bytes_today_and_fleet(world: World, start_app: StartApp) -> None:
    """/stats reports active streams, bytes served today against the limit, and each client's state."""
    _, msg = world.store(SyntheticContent(5000, seed=2), name="s.bin")
    app = await start_app(world, bandwidth_daily_limit_gb=1.0)
    assert len(await (await app.client.get(app.dl_path(msg))).read()) == 5000
    await app.services.bandwidth.flush()
    (reply,) = await say(app, world.admin, text="/stats")
    assert "Active streams: 0 (1 download finished since start)" in reply
    assert "Clients: 1/1 healthy" in reply
    assert f"@{world.main_bot.username}: healthy, 0 streams now, 1 since start" in reply
    assert "Served today (UTC): 5 kB of 1.00 GB" in reply  # not "0.00 GB"


@pytest.mark.parametrize(
    ("text", "length"),
    [("", 0), ("abc", 3), ("a\nb", 3), ("µ≈", 2), ("🎬 film", 7), ("𝄞𝄞", 4)],
)
def test_preformatted_covers_the_text_in_utf16_units(text: str, length: int) -> None:
    """Telegram measures entities in UTF-16 code units: astral characters count twice."""
    from streambot.bot.handlers import preformatted

    entity = preformatted(text)
    assert (entity.offset, entity.length) == (0, length)
