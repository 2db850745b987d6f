"""The info file a running wire simulator writes: where its DCs and control API listen, and its world.

``python -m streambot simulator --info-out FILE`` writes it atomically once every port listens;
``run --telegram FILE``, ``demo --telegram wire`` and the tests read it. It is loaded with checks,
so a wrong or half-written file is a clear :class:`InfoError`, not a traceback.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class InfoError(Exception):
    """The info file is missing, not JSON, or lacks what a client needs."""


@dataclass(frozen=True, slots=True)
class InfoFile:
    """One file the simulator posted into the storage channel at start."""

    name: str
    size: int
    message_id: int
    dc: int
    path: str | None = None
    mime_type: str = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class SimulatorInfo:
    control_url: str
    dcs: dict[int, tuple[str, int]]  # dc id -> (host, port)
    api_id: int
    api_hash: str
    bot_token: str
    worker_tokens: tuple[str, ...]
    bin_channel: int
    admin_id: int
    rsa_public_key: str  # PEM of the key the simulator signs its DH answers with
    files: tuple[InfoFile, ...] = ()
    # dc id -> (host, port) of its media-only address: media sessions connect there, so the
    # server can tell them from a second main connection (which would be AUTH_KEY_DUPLICATED).
    media_dcs: dict[int, tuple[str, int]] = field(default_factory=dict)
    pid: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("extra")
        out["dcs"] = _addresses(self.dcs)
        out["media_dcs"] = _addresses(self.media_dcs)
        out["worker_tokens"] = list(self.worker_tokens)
        out["files"] = [
            {k: v for k, v in asdict(f).items() if v is not None or k != "path"} for f in self.files
        ]
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, data: Any) -> SimulatorInfo:
        if not isinstance(data, dict):
            raise InfoError("not a JSON object")
        required = ("control_url", "dcs", "bot_token", "bin_channel", "rsa_public_key")
        absent = [name for name in required if name not in data]
        if absent:
            raise InfoError(f"{absent[0]} is missing")
        try:
            dcs = _parse_addresses(data["dcs"])
            media_dcs = _parse_addresses(data.get("media_dcs", {}))
            if not dcs:
                raise InfoError("dcs is empty")
            files = tuple(
                InfoFile(
                    name=str(f["name"]),
                    size=int(f["size"]),
                    message_id=int(f["message_id"]),
                    dc=int(f["dc"]),
                    path=f.get("path"),
                    mime_type=str(f.get("mime_type", "application/octet-stream")),
                )
                for f in data.get("files", [])
            )
            known = {
                "control_url", "dcs", "api_id", "api_hash", "bot_token", "worker_tokens",
                "bin_channel", "admin_id", "rsa_public_key", "files", "media_dcs", "pid",
            }  # fmt: skip
            return cls(
                control_url=str(data["control_url"]),
                dcs=dcs,
                api_id=int(data["api_id"]),
                api_hash=str(data["api_hash"]),
                bot_token=str(data["bot_token"]),
                worker_tokens=tuple(str(t) for t in data.get("worker_tokens", [])),
                bin_channel=int(data["bin_channel"]),
                admin_id=int(data["admin_id"]),
                rsa_public_key=str(data["rsa_public_key"]),
                files=files,
                media_dcs=media_dcs,
                pid=int(data.get("pid", 0)),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except KeyError as exc:
            raise InfoError(f"{exc.args[0]} is missing") from exc
        except (TypeError, ValueError, AttributeError) as exc:
            raise InfoError(f"a field has the wrong type: {exc}") from exc

    @classmethod
    def load(cls, path: Path) -> SimulatorInfo:
        try:
            text = path.read_text()
        except OSError as exc:
            raise InfoError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InfoError(f"{path} is not JSON: {exc}") from exc
        try:
            return cls.from_json(data)
        except InfoError as exc:
            raise InfoError(f"{path}: {exc}") from exc


def _addresses(dcs: dict[int, tuple[str, int]]) -> dict[str, str]:
    return {str(dc): f"{host}:{port}" for dc, (host, port) in sorted(dcs.items())}


def _parse_addresses(data: Any) -> dict[int, tuple[str, int]]:
    out: dict[int, tuple[str, int]] = {}
    for dc, address in data.items():
        host, _, port = str(address).rpartition(":")
        out[int(dc)] = (host.strip("[]"), int(port))
    return out
