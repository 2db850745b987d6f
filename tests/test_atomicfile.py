"""atomic_write: readers see the old file or the new one, never a torn or half-private one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from streambot.atomicfile import atomic_write


def test_writes_content_with_the_requested_mode(tmp_path: Path) -> None:
    """The file holds exactly the bytes given and has the mode asked for (umask does not apply)."""
    path = tmp_path / "secret"
    old_umask = os.umask(0o077)
    try:
        atomic_write(path, b"\x00key\n", mode=0o640)
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == b"\x00key\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_default_mode_is_world_readable(tmp_path: Path) -> None:
    """Without a mode the file is 0644, like the links JSON other programs read."""
    path = tmp_path / "links.json"
    atomic_write(path, b"[]")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_replaces_existing_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    """A second write replaces the content (and the mode); only the target remains in the folder."""
    path = tmp_path / "links.json"
    atomic_write(path, b"old", mode=0o644)
    atomic_write(path, b"new content", mode=0o600)
    assert path.read_bytes() == b"new content"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["links.json"]


def test_replacement_is_a_new_inode(tmp_path: Path) -> None:
    """The new content arrives by rename: a reader holding the old file still reads the old bytes."""
    path = tmp_path / "links.json"
    atomic_write(path, b"old")
    with path.open("rb") as reader:
        atomic_write(path, b"new")
        assert reader.read() == b"old"
    assert path.read_bytes() == b"new"


def test_failed_write_keeps_old_content_and_cleans_up(tmp_path: Path) -> None:
    """If writing fails (here: data that is not bytes), the old file is intact and no temp file is left."""
    path = tmp_path / "links.json"
    atomic_write(path, b"old")
    with pytest.raises(TypeError):
        atomic_write(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["links.json"]


def test_failed_rename_keeps_old_content_and_cleans_up(tmp_path: Path) -> None:
    """If the final rename fails (target is a non-empty directory), nothing is left behind."""
    target = tmp_path / "occupied"
    target.mkdir()
    (target / "inside").write_bytes(b"x")
    with pytest.raises(IsADirectoryError):
        atomic_write(target, b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["occupied"]
    assert (target / "inside").read_bytes() == b"x"


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    """The parent directory is not created implicitly; the caller gets FileNotFoundError."""
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "no" / "such" / "file", b"x")


def test_accepts_a_string_path(tmp_path: Path) -> None:
    """A str path works as well as a Path."""
    atomic_write(str(tmp_path / "f"), b"ok")  # type: ignore[arg-type]
    assert (tmp_path / "f").read_bytes() == b"ok"
