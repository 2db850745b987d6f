"""The deployment kit in deploy/: each file parses or verifies with the tool that will read it.

Docker itself cannot run here (no engine), so the Dockerfile is checked for its structure; the
compose files are parsed as YAML; the systemd unit goes through ``systemd-analyze verify``; the
nginx snippet through ``nginx -t`` inside a throwaway wrapper config; the Caddyfile through
``caddy validate`` when Caddy is installed. .ci/run installs nginx and systemd.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from streambot import exitcodes

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
)
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def test_single_node_compose_file_parses_and_keeps_state_in_volumes() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yml").read_text())
    service = compose["services"]["streambot"]
    build = service["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert service["environment"]["DATA_DIR"] == "/data"
    assert service["environment"]["LOG_DIR"] == "/logs"
    assert {"data:/data", "logs:/logs"} <= set(service["volumes"])
    assert set(compose["volumes"]) == {"data", "logs"}
    assert all(port.startswith("127.0.0.1:") for port in service["ports"])  # proxy in front
    assert service["restart"] == "unless-stopped"
    assert "no-new-privileges:true" in service["security_opt"]


def test_every_compose_file_in_deploy_parses() -> None:
    files = sorted(DEPLOY.glob("compose*.yml"))
    assert DEPLOY / "compose.yml" in files
    for path in files:
        assert "services" in yaml.safe_load(path.read_text()), path


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            rows.append((word.upper(), rest.strip()))
    return rows


def test_dockerfile_structure() -> None:
    """Slim Python base, a non-root user, DATA_DIR/LOG_DIR volumes, a /healthz health check."""
    rows = dockerfile()
    bases = [args for word, args in rows if word == "FROM"]
    assert bases
    assert all(re.match(r"python:\$\{PYTHON_VERSION\}-slim\b", b) for b in bases)
    assert "ARG PYTHON_VERSION=3.11" in {f"{w} {a}" for w, a in rows}
    final = rows[max(i for i, (w, _) in enumerate(rows) if w == "FROM") :]
    users = [args for word, args in final if word == "USER"]
    assert users
    assert users[-1] not in ("root", "0")
    volumes = " ".join(args for word, args in final if word == "VOLUME")
    assert '"/data"' in volumes
    assert '"/logs"' in volumes
    env = " ".join(args for word, args in final if word == "ENV")
    assert "DATA_DIR=/data" in env
    assert "LOG_DIR=/logs" in env
    (health,) = [args for word, args in final if word == "HEALTHCHECK"]
    assert "/healthz" in health
    assert [args for word, args in final if word == "ENTRYPOINT"] == [
        '["python", "-m", "streambot"]'
    ]
    for word, args in rows:  # every COPY source exists in the checkout
        if word == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), source
    assert "TgCrypto" in (ROOT / "pyproject.toml").read_text()  # built into /wheels


def test_systemd_unit_is_hardened_and_knows_the_exit_codes() -> None:
    unit = (DEPLOY / "streambot.service").read_text()
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and line[0].isalpha()
    )
    assert settings["RestartPreventExitStatus"] == str(exitcodes.CONFIG)
    assert settings["Restart"] == "on-failure"
    assert settings["NoNewPrivileges"] == "yes"
    assert settings["ProtectSystem"] == "strict"
    assert settings["ReadWritePaths"] == "/var/lib/streambot /var/log/streambot"
    assert "RestartMaxDelaySec" in settings
    assert f"{exitcodes.LOGIN_FLOOD_WAIT} = Telegram answered the login with a FloodWait" in unit
    assert "--env-file /etc/streambot/config.env run" in settings["ExecStart"]


@pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="needs systemd-analyze: apt-get install -y systemd (.ci/run does this)",
)
def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """The unit as shipped, with ExecStart pointed at this Python (verify checks it exists)."""
    unit = (DEPLOY / "streambot.service").read_text()
    unit = unit.replace("/opt/streambot/.venv/bin/python", sys.executable)
    path = tmp_path / "streambot.service"
    path.write_text(unit)
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    version = int(
        re.search(r"systemd (\d+)", subprocess.run(
            [SYSTEMD_ANALYZE, "--version"], capture_output=True, text=True, check=False
        ).stdout)[1]  # type: ignore[index]
    )  # fmt: skip
    problems = [line for line in result.stderr.splitlines() if line.strip()]
    if version < 254:  # RestartSteps/RestartMaxDelaySec are newer; older systemd ignores them
        problems = [
            p
            for p in problems
            if not re.search(r"Unknown key '?(RestartSteps|RestartMaxDelaySec)", p)
        ]
    assert result.returncode == 0, result.stderr
    assert problems == []


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs openssl to make a throwaway certificate for nginx -t")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=files.example.com", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.mark.skipif(
    NGINX is None, reason="needs nginx: apt-get install -y nginx (.ci/run does this)"
)
def test_nginx_snippet_passes_nginx_t(tmp_path: Path) -> None:
    snippet = (DEPLOY / "nginx.conf").read_text()
    cert, key = self_signed(tmp_path)
    live = "/etc/letsencrypt/live/files.example.com"
    assert f"{live}/fullchain.pem" in snippet
    snippet = snippet.replace(f"{live}/fullchain.pem", str(cert))
    snippet = snippet.replace(f"{live}/privkey.pem", str(key))
    (tmp_path / "streambot.conf").write_text(snippet)
    temp = "\n".join(
        f"    {kind}_temp_path {tmp_path}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    wrapper = tmp_path / "nginx.conf"
    wrapper.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n    access_log off;\n{temp}\n    include {tmp_path}/streambot.conf;\n}}\n"
    )
    assert NGINX is not None
    result = subprocess.run(
        [NGINX, "-t", "-p", str(tmp_path), "-c", str(wrapper)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


@pytest.mark.parametrize("name", ["nginx.conf", "Caddyfile"])
def test_proxy_snippets_stream_with_long_timeouts_and_forwarded_headers(name: str) -> None:
    text = (DEPLOY / name).read_text()
    if name == "nginx.conf":
        for directive in (
            "proxy_buffering off;",
            "proxy_request_buffering off;",
            "proxy_read_timeout 1h;",
            "proxy_send_timeout 1h;",
            "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            "proxy_set_header X-Forwarded-Proto $scheme;",
            "proxy_set_header Host $host;",
        ):
            assert directive in text
    else:  # Caddy forwards X-Forwarded-* by itself
        for directive in ("flush_interval -1", "read_timeout 1h", "write_timeout 1h"):
            assert directive in text
    assert "127.0.0.1:8080" in text
    assert "TRUSTED_PROXIES=127.0.0.1" in text


@pytest.mark.skipif(shutil.which("caddy") is None, reason="needs caddy (not in .ci/run)")
def test_caddyfile_validates(tmp_path: Path) -> None:
    result = subprocess.run(
        ["caddy", "adapt", "--adapter", "caddyfile", "--config", str(DEPLOY / "Caddyfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_readme_has_a_section_per_deployment_path_and_for_the_operators_day() -> None:
    text = (ROOT / "README.md").read_text()
    headings = re.findall(r"^#{2,4} (.+)$", text, re.M)
    for wanted in (
        "Docker",
        "systemd",
        "Reverse proxy",
        "Backups",
        "Upgrades",
        "Log rotation",
        "BotFather commands",
        "Telegram errors",
    ):
        assert any(wanted in h for h in headings), wanted
    for name in ("compose.yml", "Dockerfile", "streambot.service", "nginx.conf", "Caddyfile"):
        assert f"deploy/{name}" in text


def test_readme_names_only_files_that_exist() -> None:
    text = (ROOT / "README.md").read_text()
    named = set(
        re.findall(r"`((?:deploy|tests|bench|streambot|routes|utils|\.ci)/[^`\s*]+)`", text)
    )
    named |= set(re.findall(r"\]\(((?!https?:)[^)#\s]+)\)", text))  # relative links
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert missing == []
