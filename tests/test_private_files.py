"""Credentials are owner-only (issue 16 item 5): session files, the sessions folder, the link
secret and the database are created 0600/0700, and looser existing ones are tightened at start."""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
from pathlib import Path

import pytest

from streambot.config import Settings, ensure_link_secret
from streambot.simulator.world import World

from .helpers import StartApp


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def credentials(data_dir: Path) -> list[Path]:
    sessions = data_dir / "sessions"
    return [
        sessions,
        *sorted(sessions.glob("*.session")),
        data_dir / "streambot.sqlite3",
        data_dir / "link_secret",
    ]


@pytest.fixture(autouse=True)
def _permissive_umask() -> object:
    """The usual umask 022, under which the defaults were world-readable."""
    old = os.umask(0o022)
    yield
    os.umask(old)


async def test_new_credentials_are_owner_only(
    world: World, start_app: StartApp, tmp_path: Path
) -> None:
    data_dir = tmp_path / "fresh"
    ensure_link_secret(dataclasses.replace(Settings(), data_dir=data_dir))
    await start_app(world, data_dir=data_dir)
    found = credentials(data_dir)
    assert [p.name for p in found if p.suffix == ".session"], "no session file was written"
    for path in found:
        assert mode(path) == (0o700 if path.is_dir() else 0o600), path
    # SQLite's -wal/-shm files take the database's mode.
    for extra in data_dir.glob("streambot.sqlite3-*"):
        assert mode(extra) == 0o600, extra


async def test_existing_credentials_are_tightened_at_start_with_a_log_line(
    world: World, start_app: StartApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "old"
    # A first run creates everything; then make it as loose as the old defaults left it.
    ensure_link_secret(dataclasses.replace(Settings(), data_dir=data_dir))
    first = await start_app(world, data_dir=data_dir)
    await first.client.close()
    for path in credentials(data_dir):
        path.chmod(0o755 if path.is_dir() else 0o644)

    caplog.set_level(logging.INFO)
    ensure_link_secret(dataclasses.replace(Settings(), data_dir=data_dir))
    await start_app(world, data_dir=data_dir)
    for path in credentials(data_dir):
        assert mode(path) == (0o700 if path.is_dir() else 0o600), path
        assert any(
            str(path) in r.getMessage() and "owner-only" in r.getMessage() for r in caplog.records
        ), path
