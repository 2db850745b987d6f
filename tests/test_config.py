"""Settings: parsing, validation messages, secrets, env-file layering, MULTI_TOKENn, the link secret."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path
from typing import Any, get_type_hints

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streambot.config import ConfigError, Settings, ensure_link_secret, tuning_warnings

TOKEN = "123456789:AAExampleExampleExampleExampleExam"
VALID: dict[str, str] = {
    "API_ID": "123456",
    "API_HASH": "0123456789abcdef0123456789abcdef",
    "BOT_TOKEN": TOKEN,
    "BIN_CHANNEL": "-1001234567890",
    "BASE_URL": "https://files.example.com",
}
FIELDS = dataclasses.fields(Settings)
HINTS = get_type_hints(Settings)
ENV_NAMES = [f.name.upper() for f in FIELDS if f.name != "worker_tokens"]
SECRET_FIELDS = [f for f in FIELDS if f.metadata["secret"]]


def problems_for(**env: str) -> list[str]:
    """The problems reported for VALID with ``env`` on top (empty list: it loaded)."""
    return problems_for_env({**VALID, **env})


def problems_for_env(env: dict[str, str]) -> list[str]:
    """The problems reported for exactly ``env``."""
    try:
        Settings.from_env(env)
    except ConfigError as exc:
        return exc.problems
    return []


def example_value(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata["example"])


# ---------------------------------------------------------------------------- messages

INVALID = [
    # variable, value, the problem, the example shown
    ("API_ID", "abc", "must be an integer", "API_ID=123456"),
    ("API_ID", "0", "must be at least 1", "API_ID=123456"),
    ("API_HASH", "not-a-hash", "must be 32 lowercase hex characters", "API_HASH=0123456789abcdef"),
    ("BOT_TOKEN", "12345", "is not a bot token from @BotFather", "BOT_TOKEN=123456789:AA"),
    ("BIN_CHANNEL", "12345", "must be a channel id starting with -100", "BIN_CHANNEL=-100"),
    ("BIN_CHANNEL", "@mychannel", "must be an integer", "BIN_CHANNEL=-1001234567890"),
    ("BASE_URL", "files.example.com", "must be an http(s) URL", "BASE_URL=https://"),
    ("BASE_URL", "https://x.com/?a=1", "without query or fragment", "BASE_URL=https://"),
    ("PORT", "http", "must be an integer", "PORT=8080"),
    ("PORT", "70000", "must be a TCP port between 1 and 65535", "PORT=8080"),
    ("LINK_SECRET", "too-short", "must be at least 32 characters", "LINK_SECRET=a-long"),
    ("ADMINS", "1,two", "must be a comma-separated list of integers", "ADMINS=11111111,"),
    ("ALLOWED_USERS", "@alice", "must be a comma-separated list of integers", "ALLOWED_USERS="),
    ("MULTI_TOKEN1", "nope", "is not a bot token from @BotFather", "MULTI_TOKEN1=123456789:"),
    ("LOG_LEVEL", "LOUD", "must be one of", "LOG_LEVEL=INFO"),
    ("SHUTDOWN_GRACE_SECONDS", "soon", "must be a number", "SHUTDOWN_GRACE_SECONDS=10"),
    ("SHUTDOWN_GRACE_SECONDS", "nan", "must be a finite number", "SHUTDOWN_GRACE_SECONDS=10"),
    ("TELEGRAM_CONNECT_TIMEOUT", "inf", "must be a finite number", "TELEGRAM_CONNECT_TIMEOUT=30"),
    ("TELEGRAM_CONNECT_TIMEOUT", "0.5", "must be at least 1", "TELEGRAM_CONNECT_TIMEOUT=30"),
    ("WORKERS", "0", "must be between 1 and 64", "WORKERS=4"),
    ("STREAM_BLOCK_SIZE_KIB", "1000", "must be a power of two", "STREAM_BLOCK_SIZE_KIB=1024"),
    ("MAX_STREAMS", "-1", "must be at least 1", "MAX_STREAMS=250"),
    ("DATA_DIR", "~no_such_user_9f8e7d/data", "~user", "DATA_DIR=/var/lib/streambot"),
]


CROSS_FIELD = [
    (
        {"MEMORY_WARNING_PERCENT": "95", "MEMORY_CRITICAL_PERCENT": "90"},
        "MEMORY_WARNING_PERCENT (95) must be below MEMORY_CRITICAL_PERCENT (90)",
        "MEMORY_WARNING_PERCENT=80",
    ),
    (
        {"MAX_STREAMS": "1000"},
        "STREAM_MEMORY_BUDGET_MB (160) must hold one block per stream",
        "STREAM_MEMORY_BUDGET_MB=500",
    ),
    (
        {"STREAM_MEMORY_BUDGET_MB": "32", "STREAM_BLOCK_SIZE_KIB": "512"},
        "MAX_STREAMS x 256 KiB (half of STREAM_BLOCK_SIZE_KIB, the block of a crowded server) "
        "= 63 MiB with MAX_STREAMS=250 and STREAM_BLOCK_SIZE_KIB=512",
        "STREAM_MEMORY_BUDGET_MB=63",
    ),
]


@pytest.mark.parametrize(("env", "problem", "example"), CROSS_FIELD)
def test_settings_that_conflict_are_named_with_an_example(
    env: dict[str, str], problem: str, example: str
) -> None:
    """Values valid alone but not together give one line naming both and a working example."""
    (line,) = problems_for(**env)
    assert problem in line
    assert f"e.g. {example}" in line


@pytest.mark.parametrize(
    "env",
    [
        {"MAX_STREAMS": "1000", "STREAM_BLOCK_SIZE_KIB": "256"},  # 125 MiB of 160
        {"MAX_STREAMS": "320"},  # 320 half blocks of 512 KiB: exactly the default 160 MiB
        {"MAX_STREAMS": "4", "STREAM_BLOCK_SIZE_KIB": "4", "STREAM_MEMORY_BUDGET_MB": "1"},
        {"MAX_STREAMS": "1000", "STREAM_MEMORY_BUDGET_MB": "1000"},
        {"MAX_STREAMS": "3", "STREAM_MEMORY_BUDGET_MB": "3"},
    ],
)
def test_a_budget_of_one_block_per_stream_is_enough(env: dict[str, str]) -> None:
    assert problems_for(**env) == []


@pytest.mark.parametrize(("name", "value", "problem", "example"), INVALID)
def test_invalid_value_names_variable_problem_and_example(
    name: str, value: str, problem: str, example: str
) -> None:
    """Each invalid variable yields exactly one line: NAME, the problem, then 'e.g. NAME=example'."""
    problems = problems_for(**{name: value})
    assert len(problems) == 1, problems
    (line,) = problems
    assert line.startswith(f"{name} ")
    assert problem in line
    assert f", e.g. {example}" in line


def test_message_matches_the_documented_form() -> None:
    """The README's example message is what API_ID=abc really produces (plus the value seen)."""
    assert problems_for(API_ID="abc") == [
        "API_ID must be an integer (got 'abc'), e.g. API_ID=123456"
    ]


@pytest.mark.parametrize(
    "name", [f.name.upper() for f in FIELDS if HINTS[f.name] in (int, float) and f.init]
)
def test_every_numeric_setting_rejects_text_with_its_example(name: str) -> None:
    """Every int/float setting (present and future) reports non-numbers with its own example."""
    (line,) = problems_for(**{name: "twelve"})
    field = next(f for f in FIELDS if f.name.upper() == name)
    assert line.startswith(f"{name} must be a")
    assert line.endswith(f", e.g. {name}={field.metadata['example']}")


# Settings whose example is only valid together with another setting (a cross-field rule).
COMPANIONS = {"DATABASE_URL": {"LINK_SECRET": "k" * 32}}


@pytest.mark.parametrize("field", [f for f in FIELDS if f.name != "worker_tokens"], ids=str)
def test_every_example_is_itself_valid(field: dataclasses.Field[Any]) -> None:
    """The example shown for a setting is accepted for it, so following the advice works."""
    name = field.name.upper()
    assert problems_for(**{name: example_value(field)}, **COMPANIONS.get(name, {})) == []


def test_shared_database_needs_an_explicit_link_secret() -> None:
    """With DATABASE_URL every node must be given the same LINK_SECRET: a generated one would differ."""
    url = "postgresql://u:p@db:5432/streambot"
    (line,) = problems_for(DATABASE_URL=url)
    assert line.startswith("LINK_SECRET is required when DATABASE_URL is set")
    assert "p@db" not in line
    assert problems_for(DATABASE_URL=url, LINK_SECRET="k" * 32) == []
    (bad,) = problems_for(DATABASE_URL="mysql://db/x", LINK_SECRET="k" * 32)
    assert bad.startswith("DATABASE_URL must be a postgresql:// URL")
    assert "mysql" not in bad  # a URL may carry a password: never echoed


def test_web_node_needs_workers_but_no_bot_token() -> None:
    """NODE_ROLE=web: BOT_TOKEN may be absent; its own workers, a shared database and secret may not."""
    without_bot = {k: v for k, v in VALID.items() if k != "BOT_TOKEN"}
    shared = {"DATABASE_PATH": "/srv/shared/streambot.sqlite3", "LINK_SECRET": "k" * 32}
    (line,) = problems_for_env({**without_bot, "NODE_ROLE": "web", **shared})
    assert line.startswith("NODE_ROLE=web needs its own worker bots")
    worker = "123456789:AAExampleExampleExampleExampleExam"
    web = {**without_bot, "NODE_ROLE": "web", "MULTI_TOKEN1": worker}
    assert problems_for_env({**web, **shared}) == []
    assert (
        problems_for_env({**web, "DATABASE_URL": "postgresql://db/x", "LINK_SECRET": "k" * 32})
        == []
    )
    # A web node must share the bot node's database (revocations, bans, quotas) and link secret.
    (own_db,) = problems_for_env(web)
    assert own_db.startswith("NODE_ROLE=web must share the bot node's database")
    (no_secret,) = problems_for_env({**web, "DATABASE_PATH": shared["DATABASE_PATH"]})
    assert no_secret.startswith("NODE_ROLE=web needs the bot node's LINK_SECRET")
    (role,) = problems_for(NODE_ROLE="both")
    assert role.startswith("NODE_ROLE must be bot or web")


def test_every_setting_has_docs_and_a_known_group() -> None:
    """Every setting carries a one-line doc and an example (they drive messages and the sample)."""
    for f in FIELDS:
        assert f.metadata["doc"].strip(), f.name
        assert f.metadata["example"].strip(), f.name


def test_all_problems_are_reported_at_once() -> None:
    """Five bad variables give five lines in one ConfigError, in declaration order."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {**VALID, "API_ID": "x", "PORT": "0", "LOG_LEVEL": "?", "WORKERS": "a", "ADMINS": "b"}
        )
    names = [line.split()[0] for line in caught.value.problems]
    assert names == ["API_ID", "PORT", "ADMINS", "WORKERS", "LOG_LEVEL"]
    assert str(caught.value) == "\n".join(caught.value.problems)


def test_missing_required_settings_are_all_named() -> None:
    """An empty environment names every required Telegram/web setting with an example."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({})
    expected = [f.name.upper() for f in FIELDS if f.metadata["required"]]
    assert expected == ["API_ID", "API_HASH", "BOT_TOKEN", "BIN_CHANNEL", "BASE_URL"]
    assert [p.split()[0] for p in caught.value.problems] == expected
    for line in caught.value.problems:
        assert " is required, e.g. " in line


def test_demo_needs_no_credentials() -> None:
    """require_telegram=False (the demo) accepts an empty environment and keeps the defaults."""
    s = Settings.from_env({}, require_telegram=False)
    assert (s.port, s.bind_host, s.worker_tokens) == (8080, "0.0.0.0", ())


def test_values_are_typed_and_frozen() -> None:
    """Parsed values have their declared types, surrounding blanks are ignored, and nothing can change."""
    s = Settings.from_env(
        {**VALID, "PORT": " 9000 ", "ADMINS": "1, 2 3", "DATA_DIR": "/srv/x", "LOG_LEVEL": "debug"}
    )
    assert s.port == 9000
    assert s.api_id == 123456
    assert s.admins == (1, 2, 3)
    assert s.data_dir == Path("/srv/x")
    assert s.shutdown_grace_seconds == 10.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]


# ---------------------------------------------------------------------------- secrets

MARK = "SeCrEtMaRk"
SECRET_BAD_VALUES = {
    "API_HASH": f"{MARK}-not-hex",
    "BOT_TOKEN": f"{MARK}",
    "LINK_SECRET": f"{MARK}-short",
}


def reported(env: dict[str, str]) -> str:
    """Everything a ConfigError for ``env`` would print ('' when it loads)."""
    try:
        Settings.from_env(env)
    except ConfigError as exc:
        return str(exc)
    return ""


@pytest.mark.parametrize("field", SECRET_FIELDS, ids=str)
def test_secret_values_never_appear_in_messages(field: dataclasses.Field[Any]) -> None:
    """A wrong value of any secret setting is reported without quoting the value."""
    name = "MULTI_TOKEN3" if field.name == "worker_tokens" else field.name.upper()
    bad = SECRET_BAD_VALUES.get(name, MARK)
    for value in (bad, f"{MARK} not valid {MARK}", f"{MARK}\n{MARK}"):
        assert MARK not in reported({**VALID, name: value})
    if name in (*SECRET_BAD_VALUES, "MULTI_TOKEN3"):
        assert reported({**VALID, name: bad}).startswith(f"{name} ")


def test_secret_fields_are_the_known_ones() -> None:
    """The secret-marked settings include every credential (a new one must be marked too)."""
    names = {f.name for f in SECRET_FIELDS}
    assert {"api_hash", "bot_token", "worker_tokens", "link_secret"} <= names


def test_repr_and_str_hide_every_secret() -> None:
    """repr() and str() of settings show *** for each secret and never its value."""
    secrets = {
        "API_HASH": "fedcba9876543210fedcba9876543210",
        "BOT_TOKEN": "987654321:AAsecretsecretsecretsecretsecretsec",
        "MULTI_TOKEN1": "111111111:AAworkerworkerworkerworkerworkerwor",
        "LINK_SECRET": "x" * 40,
        "DATABASE_URL": "postgresql://streambot:pw-secret-0123@db:5432/streambot",
    }
    env = {**VALID, **secrets}
    for f in SECRET_FIELDS:
        env.setdefault(f.name.upper(), "another-secret-value-0123456789abcdef")
    s = Settings.from_env(env)
    for text in (repr(s), str(s), f"{s}"):
        for f in SECRET_FIELDS:
            value = getattr(s, f.name)
            for part in value if isinstance(value, tuple) else (value,):
                assert part, f.name
                assert part not in text, f.name
        assert text.count("***") == len(SECRET_FIELDS)
    assert "api_id=123456" in repr(s)


# ---------------------------------------------------------------------------- MULTI_TOKENn


def test_worker_tokens_are_collected_in_numeric_order() -> None:
    """MULTI_TOKEN10 comes after MULTI_TOKEN2; gaps are fine and empty values are skipped."""
    tokens = {n: f"{n}0000000:AA{'w' * 32}" for n in (1, 2, 7, 10, 11)}
    env = {**VALID, **{f"MULTI_TOKEN{n}": t for n, t in tokens.items()}, "MULTI_TOKEN3": " "}
    s = Settings.from_env(dict(reversed(list(env.items()))))
    assert s.worker_tokens == tuple(tokens[n] for n in (1, 2, 7, 10, 11))


def test_bad_worker_token_is_reported_under_its_own_name() -> None:
    """The message names the variable that is wrong (MULTI_TOKEN10), not its position in the list."""
    problems = problems_for(MULTI_TOKEN1=TOKEN, MULTI_TOKEN10="broken")
    assert len(problems) == 1
    assert problems[0].startswith("MULTI_TOKEN10 is not a bot token")
    assert ", e.g. MULTI_TOKEN10=" in problems[0]


def test_look_alike_variables_are_not_worker_tokens() -> None:
    """Only MULTI_TOKEN<digits> counts: MULTI_TOKEN, MULTI_TOKEN_X and MULTI_TOKENS are ignored."""
    s = Settings.from_env({**VALID, "MULTI_TOKEN": "x", "MULTI_TOKEN_X": "y", "MULTI_TOKENS": "z"})
    assert s.worker_tokens == ()


# ---------------------------------------------------------------------------- files and environment


def write_env(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    """The env file is read first and the process environment wins."""
    env_file = write_env(tmp_path / "custom.env", {**VALID, "PORT": "9000", "WORKERS": "8"})
    s = Settings.load(env_file, {"PORT": "9100"})
    assert (s.port, s.workers, s.api_id) == (9100, 8, 123456)


def test_empty_environment_value_keeps_the_file_value(tmp_path: Path) -> None:
    """PORT= in the environment does not wipe PORT=9000 from the file."""
    env_file = write_env(tmp_path / "config.env", {**VALID, "PORT": "9000"})
    s = Settings.load(env_file, {"PORT": "", "BOT_TOKEN": "  "})
    assert s.port == 9000
    assert s.bot_token == TOKEN


def test_env_file_syntax_quotes_comments_and_export(tmp_path: Path) -> None:
    """The file accepts comments, quotes and `export` prefixes like a shell env file."""
    env_file = tmp_path / "config.env"
    env_file.write_text(
        "# StreamBot\n"
        + "".join(f"export {k}={v}\n" for k, v in VALID.items())
        + "BASE_URL='https://q.example.com'  # trailing comment\n"
        + 'ADMINS="1,2"\n'
    )
    s = Settings.load(env_file, {})
    assert s.base_url == "https://q.example.com"
    assert s.admins == (1, 2)


def test_default_env_file_is_optional(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --env-file, ./config.env is read if present and silently skipped if not."""
    monkeypatch.chdir(tmp_path)
    assert Settings.load(None, {}, require_telegram=False).port == 8080
    write_env(tmp_path / "config.env", {"PORT": "9200"})
    assert Settings.load(None, {}, require_telegram=False).port == 9200


@pytest.mark.parametrize("explicit", ["missing.env", "config.env", "adir"])
def test_explicit_env_file_must_exist(tmp_path: Path, explicit: str) -> None:
    """A named env file that is missing (even one called config.env) or a directory is an error."""
    (tmp_path / "adir").mkdir()
    with pytest.raises(ConfigError) as caught:
        Settings.load(tmp_path / explicit, {}, require_telegram=False)
    (line,) = caught.value.problems
    assert line.startswith("--env-file ")
    assert str(tmp_path / explicit) in line


def test_unreadable_env_file_is_a_config_error(tmp_path: Path) -> None:
    """A file that is not UTF-8 is reported without quoting its bytes."""
    env_file = tmp_path / "config.env"
    env_file.write_bytes(b"BOT_TOKEN=\xff\xfe" + MARK.encode() + b"\n")
    with pytest.raises(ConfigError) as caught:
        Settings.load(env_file, {})
    assert "not UTF-8" in str(caught.value)
    assert MARK not in str(caught.value)


# ---------------------------------------------------------------------------- the link secret


def test_link_secret_is_generated_once_with_mode_0600(tmp_path: Path) -> None:
    """Without LINK_SECRET a random key is stored in DATA_DIR/link_secret (0600) and reused."""
    data_dir = tmp_path / "new" / "data"
    s = Settings.from_env({**VALID, "DATA_DIR": str(data_dir)})
    first = ensure_link_secret(s)
    path = data_dir / "link_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert path.read_bytes().strip() == first
    again = ensure_link_secret(Settings.from_env({**VALID, "DATA_DIR": str(data_dir)}))
    assert again == first
    assert [p.name for p in data_dir.iterdir()] == ["link_secret"]  # no temp file left behind


def test_link_secret_setting_wins_and_writes_nothing(tmp_path: Path) -> None:
    """An explicit LINK_SECRET is used as is; no file is created."""
    s = Settings.from_env({**VALID, "DATA_DIR": str(tmp_path), "LINK_SECRET": "k" * 32})
    assert ensure_link_secret(s) == b"k" * 32
    assert not (tmp_path / "link_secret").exists()


def test_damaged_link_secret_file_is_replaced(tmp_path: Path) -> None:
    """A stored secret too short to be one of ours is replaced by a fresh one (still 0600)."""
    (tmp_path / "link_secret").write_text("short\n")
    s = Settings.from_env({**VALID, "DATA_DIR": str(tmp_path)})
    value = ensure_link_secret(s)
    assert len(value) >= 32
    assert stat.S_IMODE(os.stat(tmp_path / "link_secret").st_mode) == 0o600


# ---------------------------------------------------------------------------- robustness

ENV_KEYS = st.sampled_from([*ENV_NAMES, "MULTI_TOKEN1", "MULTI_TOKEN2", "MULTI_TOKEN10"])


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(ENV_KEYS, st.text(), max_size=8),
    st.booleans(),
)
def test_arbitrary_values_raise_only_config_error(env: dict[str, str], base: bool) -> None:
    """Whatever text the variables hold, loading returns Settings or raises ConfigError, nothing else."""
    try:
        s = Settings.from_env({**(VALID if base else {}), **env}, require_telegram=base)
    except ConfigError as exc:
        problems = exc.problems
    else:
        problems = ["loaded"]
        assert repr(s).startswith("Settings(")
    assert problems


def test_cross_field_checks_skip_settings_already_reported_invalid() -> None:
    """A bad MEMORY_CRITICAL_PERCENT is reported once, not also compared with the warning level
    (which would blame MEMORY_WARNING_PERCENT against a default the operator never wrote)."""
    with pytest.raises(ConfigError) as failed:
        Settings.from_env(
            {"MEMORY_WARNING_PERCENT": "90", "MEMORY_CRITICAL_PERCENT": "abc"},
            require_telegram=False,
        )
    (problem,) = failed.value.problems
    assert problem.startswith("MEMORY_CRITICAL_PERCENT must be a number")
    with pytest.raises(ConfigError) as failed:
        Settings.from_env(
            {"DATABASE_URL": "postgresql://db/streambot", "LINK_SECRET": "short"},
            require_telegram=False,
        )
    (problem,) = failed.value.problems
    assert problem.startswith("LINK_SECRET must be at least 32 characters")


@pytest.mark.parametrize(
    ("env", "warned"),
    [
        ({}, False),  # the defaults: 8 x 1 MiB = 4 x 2048 KiB
        ({"STREAM_PREFETCH": "9"}, True),
        ({"STREAM_PREFETCH": "16", "MEDIA_AWAITED_KIB": "4096"}, False),
        ({"STREAM_PREFETCH": "16", "MEDIA_CONNECTIONS": "8"}, False),
        ({"STREAM_PREFETCH": "16", "STREAM_BLOCK_SIZE_KIB": "512"}, False),
        ({"STREAM_PREFETCH": "2", "MEDIA_CONNECTIONS": "1", "MEDIA_AWAITED_KIB": "512"}, True),
    ],
)
def test_tuning_warns_when_prefetch_outruns_the_media_connections(
    env: dict[str, str], warned: bool
) -> None:
    """Read-ahead beyond what one bot's media connections await only queues (bench/README)."""
    found = tuning_warnings(Settings.from_env({**VALID, **env}))
    assert bool(found) == warned
    for text in found:
        assert text.startswith("STREAM_PREFETCH (")
        assert "MEDIA_AWAITED_KIB" in text
        assert "e.g. STREAM_PREFETCH=" in text


def test_load_checked_reports_the_tuning_warning(tmp_path: Path) -> None:
    """`check` and `run` print it with the other warnings; it is no problem (the load succeeds)."""
    env_file = tmp_path / "config.env"
    env_file.write_text(
        "".join(f"{k}={v}\n" for k, v in {**VALID, "STREAM_PREFETCH": "16"}.items())
    )
    settings, report = Settings.load_checked(env_file, environ={})
    assert settings.stream_prefetch == 16
    assert any("STREAM_PREFETCH (16)" in w and "STREAM_PREFETCH=8" in w for w in report.warnings)
