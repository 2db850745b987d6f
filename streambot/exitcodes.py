"""Process exit statuses of ``python -m streambot``: one table for the CLI, systemd and docs.

The systemd unit in ``deploy/`` relies on these numbers (``RestartPreventExitStatus=`` for a
configuration error, back-off for a login FloodWait), so they are defined once, here.
"""

from __future__ import annotations

from typing import Final

#: Stopped cleanly (SIGINT/SIGTERM), or ``check``/``memlog`` succeeded.
OK: Final = 0
#: Invalid configuration or command-line arguments: restarting cannot help, fix the settings.
CONFIG: Final = 2
#: Could not start: Telegram unreachable, port in use, DATA_DIR unusable, bots in use by
#: another node. Worth retrying.
STARTUP: Final = 3
#: Telegram answered the login with a FloodWait (the bot logged in too often): restarting
#: at once would only lengthen the wait, so supervisors should back off (EX_TEMPFAIL).
LOGIN_FLOOD_WAIT: Final = 75

#: For ``--help`` texts and the README.
DESCRIPTIONS: Final = {
    OK: "stopped cleanly / success",
    CONFIG: "invalid configuration or arguments (nothing is retried)",
    STARTUP: "could not start (Telegram unreachable, port in use, DATA_DIR unusable, bots in use)",
    LOGIN_FLOOD_WAIT: "Telegram refused the login for a while (FloodWait): restart later",
}
