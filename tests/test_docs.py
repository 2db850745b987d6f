"""Documentation that no module owns stays true: the sample config, the README's commands, CI, hygiene."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

from streambot.config import GROUPS, Settings, render_sample

ROOT = Path(__file__).resolve().parent.parent
FIELDS = dataclasses.fields(Settings)


def sample() -> str:
    return (ROOT / "config.env.sample").read_text()


def readme_code_blocks() -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)


def test_sample_is_generated_from_the_settings() -> None:
    """config.env.sample is exactly render_sample(); after adding a setting, regenerate it."""
    assert sample() == render_sample(), (
        'config.env.sample is stale: run python -c "from streambot.config import render_sample; '
        "open('config.env.sample','w').write(render_sample())\""
    )


def test_sample_names_every_setting_with_default_and_example() -> None:
    """Each setting has a NAME=default line preceded by its doc and an 'example: NAME=...' line."""
    lines = sample().splitlines()
    for f in FIELDS:
        name = "MULTI_TOKEN1" if f.name == "worker_tokens" else f.name.upper()
        assignment = next(
            (i for i, line in enumerate(lines) if re.fullmatch(rf"#? ?{name}=.*", line)), None
        )
        assert assignment is not None, f"{name} missing from config.env.sample"
        assert lines[assignment - 1].startswith("# example: ")
        assert f.metadata["example"] in lines[assignment - 1]
        assert lines[assignment - 2] == f"# {f.metadata['doc']}"
        if not f.metadata["required"] and f.name != "worker_tokens":
            default = lines[assignment].split("=", 1)[1]
            parsed = Settings.from_env({f.name.upper(): default}, require_telegram=False)
            assert getattr(parsed, f.name) == f.default, f"{name}: sample default != real default"


def test_sample_is_grouped_in_the_documented_order() -> None:
    """Groups appear as headers in GROUPS order, each holding its own settings only."""
    headers = re.findall(r"^# ===== (.+?) =+$", sample(), re.M)
    used = [g for g in GROUPS if any(f.metadata["group"] == g for f in FIELDS)]
    assert headers == used
    for required in ("Telegram", "Web server", "Links", "Fleet", "Streaming", "Logging"):
        assert required in headers


def test_sample_holds_no_secret_value() -> None:
    """Secret settings are blank in the sample: no real-looking credential is shipped."""
    for f in FIELDS:
        if f.metadata["secret"] and f.name != "worker_tokens":
            assert re.search(rf"^{f.name.upper()}=$", sample(), re.M), f.name


#: Every extra a test uses: the tools, the browser test's driver, memlog's chart.
TEST_EXTRAS = ".[test,browser,chart]"


def test_readme_starts_with_the_two_setup_commands() -> None:
    """The README's first two code blocks are install + demo, then install + tests."""
    blocks = readme_code_blocks()
    demo, tests = blocks[0].strip(), blocks[1].strip()
    assert "python3.11 -m venv .venv" in demo
    assert "pip install -e ." in demo
    assert demo.endswith("-m streambot demo")
    assert "python3.11 -m venv .venv" in tests
    assert f'pip install -e "{TEST_EXTRAS}"' in tests
    assert tests.endswith("-m pytest")
    # ...and they come before any prose section.
    text = (ROOT / "README.md").read_text()
    assert text.index(blocks[1]) < text.index("\n## ")


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run is strict bash, builds a fresh venv, installs the test extras and runs README's command."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in ci
    assert "-m venv .venv" in ci
    assert f'pip install -q -e "{TEST_EXTRAS}"' in ci
    test_command = readme_code_blocks()[1].strip().rsplit("&& ", 1)[1]
    assert test_command in ci
    assert "ruff check ." in ci
    assert "ruff format --check ." in ci
    assert "\n.venv/bin/mypy\n" in ci


def test_mypy_is_strict_and_overrides_only_third_party_modules() -> None:
    """[tool.mypy] is strict over the three packages; overrides name no module of ours."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["strict"] is True
    assert config["files"] == ["streambot", "routes", "utils"]
    ours = ("streambot", "routes", "utils")
    for override in config.get("overrides", []):
        for module in override["module"]:
            assert module.split(".")[0] not in ours, module


def test_readme_explains_kurigram_and_pins_match() -> None:
    """The README says why kurigram (new channel ids, maintenance); pyproject pins the versions."""
    text = (ROOT / "README.md").read_text()
    assert "kurigram" in text
    assert "Peer id invalid" in text
    assert "unmaintained" in text
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "kurigram==2.2.26" in deps
    assert "TgCrypto==1.2.5" in deps
    assert any(re.fullmatch(r"APScheduler>=3[^,]*,<4", d) for d in deps)


def test_readme_covers_running_for_real() -> None:
    """The README walks through BotFather, the API id/hash, the storage channel and config.env."""
    text = (ROOT / "README.md").read_text()
    for needle in ("BotFather", "my.telegram.org", "private channel", "admin", "config.env"):
        assert needle in text, needle
    assert "## Architecture" in text
    assert "## Configuration" in text


def test_readme_lists_every_settings_group() -> None:
    """The README's configuration section names every group the sample uses."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Configuration") : text.index("## Architecture")]
    section = " ".join(section.split()).lower()
    for group in GROUPS:
        if any(f.metadata["group"] == group for f in FIELDS):
            assert group.lower() in section, group


def test_gitignore_covers_local_state() -> None:
    """Virtual environments, data, logs, sessions and config.env never get committed."""
    ignored = set((ROOT / ".gitignore").read_text().split())
    for entry in (".venv/", "/data/", "logs/", "*.session", "config.env"):
        assert entry in ignored, entry


def test_readme_module_map_names_every_module() -> None:
    """Every module file of the three packages appears in the README's module map, and no stale one."""
    text = (ROOT / "README.md").read_text()
    named = set(re.findall(r"`((?:streambot|routes|utils)/[\w/]+\.py)`", text))
    present = {
        str(p.relative_to(ROOT))
        for package in ("streambot", "routes", "utils")
        for p in (ROOT / package).glob("*.py")
        if p.name != "__init__.py"
    }
    assert present - named == set(), "modules missing from the README map"
    assert named - present == set(), "README names modules that do not exist"
