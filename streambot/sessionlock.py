"""One process per ``DATA_DIR/sessions``: an exclusive lock held for the process's lifetime.

Two processes logged in with the same session files open two connections with one auth key, and
Telegram then answers AUTH_KEY_DUPLICATED and invalidates the key for good (the bot must log in
again, which may FloodWait). So a second StreamBot on the same DATA_DIR refuses to start instead.
``fcntl.flock`` locks are released by the kernel when the process dies, so a crash never leaves a
stale lock behind; the pid in the file only names the holder in the message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_NAME = ".lock"


class SessionsLocked(Exception):
    """Another process holds the sessions folder."""

    def __init__(self, directory: Path, pid: str) -> None:
        holder = f"process {pid}" if pid else "another process"
        super().__init__(
            f"{holder} is already running StreamBot with the sessions in {directory}; stop it "
            "first, or give this instance its own DATA_DIR (two processes sharing a session "
            "get it invalidated by Telegram)"
        )
        self.pid = pid


class SessionLock:
    """``acquire()`` at start, ``release()`` at exit; the lock file stays (owner-only)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise SessionsLocked at once (never waits)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise SessionsLocked(self.path.parent, pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor releases the flock
