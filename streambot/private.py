"""Owner-only files and folders: where credentials live (bot sessions, link secret, database).

A bot's session file holds its Telegram auth key: whoever reads it *is* the bot. The link secret
forges links; the database holds owners, bans and revocations. So they are created owner-only
(0600 files, 0700 folders), whatever the umask, and copies left readable by older versions or by
hand are tightened at start-up, with a log line saying so (an operator should know it happened).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

FILE_MODE = 0o600
DIR_MODE = 0o700


def tighten(path: Path, mode: int, *, announce: bool = True) -> bool:
    """Remove every permission bit of ``path`` beyond ``mode``; True if any was removed.

    Only removes bits (a 0400 file stays 0400). A missing path is left alone. ``announce=False``
    is for a file this process has just created, which is no news to the operator.
    """
    try:
        current = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return False
    if not current & ~mode:
        return False
    path.chmod(current & mode)
    if not announce:
        return True
    log.warning(
        "made %s owner-only: mode %04o -> %04o (it holds credentials)",
        path,
        current,
        current & mode,
    )
    return True


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) if needed; ``path`` itself ends up 0700 at most."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    tighten(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty as 0600 if it does not exist, else tighten it to 0600 at most.

    Creating it first (``O_EXCL``) means no other process ever sees it readable; SQLite gives
    its -wal/-shm/-journal files the database file's mode.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        tighten(path, FILE_MODE)
    else:
        os.close(fd)
        os.chmod(path, FILE_MODE)  # the umask may have removed bits, never added; be exact
    return path


def tighten_all(folder: Path, pattern: str, *, announce: bool = True) -> int:
    """Tighten every file in ``folder`` matching ``pattern`` to 0600; returns how many changed."""
    paths = sorted(p for p in folder.glob(pattern) if p.is_file())
    return sum(tighten(p, FILE_MODE, announce=announce) for p in paths)
