"""``python -m streambot``: configuration errors, ``check``, and ``run`` failing cleanly offline (subprocesses)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .helpers import API_HASH, BOT_TOKEN, GOOD, cli_env, free_port, streambot


def write_env(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def test_check_reports_every_problem_and_exits_2(tmp_path: Path) -> None:
    """A bad config.env: exit status 2, every problem listed with an example, no traceback, no secret."""
    write_env(
        tmp_path / "config.env",
        {
            "API_ID": "abc",
            "API_HASH": "SeCrEt-not-hex",
            "BOT_TOKEN": "SeCrEt",
            "BIN_CHANNEL": "42",
            "PORT": "99999",
            "MULTI_TOKEN2": "SeCrEt-worker",
        },
    )
    result = streambot("check", cwd=tmp_path)
    assert result.returncode == 2
    out = result.stdout + result.stderr
    assert "Traceback" not in out
    assert "SeCrEt" not in out
    assert "Configuration problems:" in result.stderr
    for expected in (
        "API_ID must be an integer (got 'abc'), e.g. API_ID=123456",
        "API_HASH must be 32 lowercase hex characters, e.g. API_HASH=",
        "BOT_TOKEN is not a bot token from @BotFather, e.g. BOT_TOKEN=",
        "BIN_CHANNEL must be a channel id starting with -100 (got '42'), e.g. BIN_CHANNEL=",
        "BASE_URL is required, e.g. BASE_URL=https://files.example.com",
        "PORT must be a TCP port between 1 and 65535 (got '99999'), e.g. PORT=8080",
        "MULTI_TOKEN2 is not a bot token from @BotFather, e.g. MULTI_TOKEN2=",
    ):
        assert expected in result.stderr
    assert result.stderr.split("Configuration problems:")[1].count("\n  - ") == 7


def test_check_accepts_a_good_config(tmp_path: Path) -> None:
    """A complete config.env passes: exit 0 and a short confirmation."""
    write_env(tmp_path / "config.env", GOOD)
    result = streambot("check", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        "Read settings from config.env (the environment overrides it).",
        "Configuration OK.",
    ]


def test_check_warns_about_misspelt_names_and_empty_admins_but_exits_0(tmp_path: Path) -> None:
    """Unknown names get "did you mean" (difflib), empty ADMINS names what stops working; no
    problem, so exit 0."""
    values = {k: v for k, v in GOOD.items() if k != "ADMINS"}
    write_env(tmp_path / "config.env", {**values, "ADMNS": "1", "port": "9000", "FOO": "x"})
    result = streambot("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Configuration OK." in result.stdout
    assert "config.env: ADMNS is not a StreamBot setting; did you mean ADMINS?" in result.stderr
    assert (
        "config.env: port is not a StreamBot setting; names are upper case: did you mean PORT?"
        in result.stderr
    )
    assert "config.env: FOO is not a StreamBot setting; ignored" in result.stderr
    assert "ADMINS is empty: nobody can use /memory, /stats" in result.stderr


def test_check_with_a_misspelt_required_name_shows_both(tmp_path: Path) -> None:
    """A typo is the usual reason a required setting is missing: the hint comes with it."""
    values = {k: v for k, v in GOOD.items() if k != "BOT_TOKEN"}
    write_env(tmp_path / "config.env", {**values, "BOT_TOKN": BOT_TOKEN})
    result = streambot("check", cwd=tmp_path)
    assert result.returncode == 2
    assert "BOT_TOKN is not a StreamBot setting; did you mean BOT_TOKEN?" in result.stderr
    assert "BOT_TOKEN is required" in result.stderr
    assert BOT_TOKEN not in result.stdout + result.stderr


def test_check_says_when_it_read_no_file(tmp_path: Path) -> None:
    env = dict(GOOD)
    result = streambot("check", cwd=tmp_path, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Read no settings file (no ./config.env)")


def test_bin_channel_without_prefix_suggests_the_id(tmp_path: Path) -> None:
    write_env(tmp_path / "config.env", {**GOOD, "BIN_CHANNEL": "1234567890"})
    result = streambot("check", cwd=tmp_path)
    assert result.returncode == 2
    assert "did you mean BIN_CHANNEL=-1001234567890?" in result.stderr


def test_environment_overrides_config_env(tmp_path: Path) -> None:
    """The process environment fixes a bad file value; an empty one does not wipe a good one."""
    write_env(tmp_path / "config.env", {**GOOD, "PORT": "nope"})
    assert streambot("check", cwd=tmp_path, PORT="8081", API_ID="").returncode == 0


@pytest.mark.parametrize("before", [True, False], ids=["before-command", "after-command"])
def test_env_file_option_is_honoured(tmp_path: Path, before: bool) -> None:
    """--env-file reads the named file, given before or after the command."""
    env_file = write_env(tmp_path / "prod.env", GOOD)
    args = (
        ["--env-file", str(env_file), "check"] if before else ["check", "--env-file", str(env_file)]
    )
    result = streambot(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_missing_explicit_env_file_is_a_clear_error(tmp_path: Path) -> None:
    """A named env file that does not exist: exit 2 with its path, no traceback."""
    result = streambot("--env-file", "nowhere/config.env", "check", cwd=tmp_path)
    assert result.returncode == 2
    assert "--env-file nowhere/config.env does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_without_credentials_exits_2(tmp_path: Path) -> None:
    """`run` with no config at all names the required settings and exits 2."""
    result = streambot("run", cwd=tmp_path)
    assert result.returncode == 2
    for name in ("API_ID", "API_HASH", "BOT_TOKEN", "BIN_CHANNEL", "BASE_URL"):
        assert f"{name} is required" in result.stderr


def run_config(tmp_path: Path, **extra: str) -> None:
    write_env(
        tmp_path / "config.env",
        {
            **GOOD,
            "DATA_DIR": str(tmp_path / "data"),
            "LOG_DIR": str(tmp_path / "logs"),
            "BIND_HOST": "127.0.0.1",
            "PORT": str(free_port()),
            **extra,
        },
    )


def test_run_fails_cleanly_when_telegram_is_unreachable(tmp_path: Path) -> None:
    """Offline, `run` gives up after TELEGRAM_CONNECT_TIMEOUT with one paragraph: no traceback, no secret."""
    run_config(tmp_path, TELEGRAM_CONNECT_TIMEOUT="3")
    result = streambot("run", cwd=tmp_path, timeout=60)
    out = result.stdout + result.stderr
    assert result.returncode == 3, out
    assert "Traceback" not in out
    assert API_HASH not in out
    assert BOT_TOKEN.split(":")[1] not in out
    failures = [line for line in result.stderr.splitlines() if "could not start" in line]
    assert len(failures) == 1, result.stderr
    (message,) = failures
    assert message.startswith("StreamBot could not start: the main bot could not start: ")
    assert "reach Telegram" in message
    # On this offline machine pyrogram keeps retrying the connection until the timeout.
    if "no answer from Telegram" not in message:
        pytest.skip(f"Telegram answered from this machine: {message}")
    assert "no answer from Telegram within 3s" in message


def test_run_stops_on_sigterm_during_start_up(tmp_path: Path) -> None:
    """SIGTERM while the bot is still connecting stops `run` at once, with status 0."""
    run_config(tmp_path, TELEGRAM_CONNECT_TIMEOUT="120")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streambot", "run"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The session file appears when the client opens its storage, just before connecting.
        session = tmp_path / "data" / "sessions" / "main-123456789.session"
        deadline = time.monotonic() + 30
        while not session.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is not None:
            pytest.skip(f"run ended before connecting: {proc.communicate()[1][-500:]}")
        assert session.exists()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Traceback" not in err
    if proc.returncode == 3 and "StreamBot could not start: " in err:
        # Some networks answer for Telegram at once (e.g. an intercepting proxy sends junk):
        # start-up then failed on its own, cleanly, before the signal could matter.
        pytest.skip(f"start-up failed by itself before SIGTERM: {err[-300:]}")
    assert proc.returncode == 0, err
    assert "StreamBot stopped during start-up." in err


def test_demo_rejects_a_missing_path(tmp_path: Path) -> None:
    """`demo nosuch.bin` exits 2 naming the path, before starting anything."""
    result = streambot("demo", "nosuch.bin", cwd=tmp_path)
    assert result.returncode == 2
    assert "nosuch.bin" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_command_shows_usage(tmp_path: Path) -> None:
    """A wrong command is an argparse usage error (exit 2), listing the commands."""
    result = streambot("serve", cwd=tmp_path)
    assert result.returncode == 2
    assert "run" in result.stderr
    assert "demo" in result.stderr


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        ("no answer from Telegram within 3s", "no answer from Telegram within 3s."),
        (
            "DATA_DIR /x is not usable: Permission denied.",
            "DATA_DIR /x is not usable: Permission denied.",
        ),
        (
            "is a proxy intercepting connections to Telegram?",
            "is a proxy intercepting connections to Telegram?",
        ),
    ],
)
def test_start_up_failure_is_one_sentence(
    message: str, shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The paragraph ends each message with exactly one stop, then the hint."""
    from streambot.__main__ import EXIT_STARTUP, _fail

    assert _fail(message, "Hint.") == EXIT_STARTUP
    assert capsys.readouterr().err == f"StreamBot could not start: {shown} Hint.\n"
