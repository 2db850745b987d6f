"""The wire simulator's control API: loopback HTTP + JSON over the one simulated world.

Tests, the demo and the benchmarks drive a simulator running in another process through it:
read request counts and connections (``GET /stats``), inject and clear faults (``POST/DELETE
/faults``), change the wire's limits (``POST /limits``), have a user write to the bot
(``POST /messages``) and read what the bot answered (``GET /replies``). ``POST /bots`` adds a bot
with access to the storage channel, so several StreamBot processes can share one simulator, each
with its own bots. Bad input gets 400 with a one-line reason; nothing here can reach a traceback
to the caller.

RPC faults go to the world (:meth:`SimulatedTelegram.inject`), so they behave the same in-process
and on the wire; wire faults (RST, black hole, stall, drip) go to the wire server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from streambot.simulator.content import DiskContent, SyntheticContent
from streambot.simulator.samples import SyntheticFile, add_content, disk_file
from streambot.simulator.telegram import (
    BAD_MSG_CODES,
    FaultKind,
    SentMessage,
    SimBot,
    SimulatedTelegram,
    SimUser,
)
from streambot.simulator.wire.faults import WireFault
from streambot.simulator.world import World
from streambot.units import parse_size

RPC_KINDS = (
    "flood_wait",
    "rpc_error",
    "file_reference_expired",
    "file_migrate",
    "bad_msg",
    "cdn_redirect",
)
#: RPC kinds the world answers with something other than an error (see ``telegram.FaultKind``).
_WORLD_KINDS: Mapping[str, FaultKind] = {"bad_msg": "bad_msg", "cdn_redirect": "cdn_redirect"}
WIRE_KINDS = ("rst", "blackhole", "stall", "drip")
FAULT_FIELDS = frozenset(
    {
        "kind",
        "method",
        "bot",
        "dc",
        "after",
        "count",
        "seconds",
        "probability",
        "code",
        "message",
        "to_dc",
    }
)
MAX_WAIT_SECONDS = 60.0  # GET /replies?wait=...: a bound, so a forgotten poll cannot hang forever
MAX_BODY_BYTES = 64 * 1024  # control requests are small JSON documents
_URL = re.compile(r"https?://[^\s<>\"']+")
_ERROR_ID = re.compile(r"[A-Z][A-Z0-9_]*")


class WireControls(Protocol):
    """What the control API needs from the wire server (``WireTelegram``)."""

    def set_limits(
        self, *, rtt_ms: float | None = None, bandwidth_mib_s: float | None = None
    ) -> None: ...

    def add_wire_fault(self, fault: WireFault) -> None: ...

    def clear_wire_faults(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...


class BadRequest(Exception):
    """Input the control API refuses; the message is the reason given with the 400."""


# ---------------------------------------------------------------------- validation (pure)


def _int(body: Mapping[str, Any], name: str, *, lo: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be an integer")
    if lo is not None and value < lo:
        raise BadRequest(f"{name} must be at least {lo}")
    return value


def _number(
    body: Mapping[str, Any], name: str, *, lo: float, hi: float | None = None
) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise BadRequest(f"{name} must be a number")
    if value < lo or (hi is not None and value > hi):
        raise BadRequest(
            f"{name} must be between {lo:g} and {hi:g}" if hi else f"{name} must be at least {lo:g}"
        )
    return float(value)


def _unknown(body: Mapping[str, Any], allowed: frozenset[str]) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise BadRequest(f"unknown field(s): {', '.join(extra)}")


def parse_fault(body: Any, *, bots: Mapping[int, SimBot], dcs: frozenset[int]) -> dict[str, Any]:
    """A ``POST /faults`` body, checked and completed with defaults; BadRequest otherwise."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    _unknown(body, FAULT_FIELDS)
    kind = body.get("kind")
    if kind not in RPC_KINDS + WIRE_KINDS:
        raise BadRequest(f"kind must be one of {', '.join(RPC_KINDS + WIRE_KINDS)}")
    bot = _int(body, "bot")
    if bot is not None and bot not in bots:
        raise BadRequest(f"no bot with id {bot}")
    dc = _int(body, "dc")
    if dc is not None and dc not in dcs:
        raise BadRequest(f"dc must be one of {', '.join(map(str, sorted(dcs)))}")
    # Absent: once (as the world's and the wire's own defaults); null: until DELETE /faults.
    count = _int(body, "count", lo=1) if "count" in body else 1
    fault: dict[str, Any] = {
        "kind": kind,
        "bot": bot,
        "dc": dc,
        "after": _int(body, "after", lo=0) or 0,
        "count": count,
        "probability": _number(body, "probability", lo=0.0, hi=1.0),
    }
    if fault["probability"] is None:
        fault["probability"] = 1.0
    elif fault["probability"] == 0:
        raise BadRequest("probability must be above 0")
    seconds = _number(body, "seconds", lo=0.0)
    method = body.get("method")
    if kind in WIRE_KINDS:
        for name in ("method", "code", "message", "to_dc"):
            if name in body:
                raise BadRequest(f"{name} does not apply to a {kind} fault")
        if kind in ("stall", "drip") and seconds == 0:
            raise BadRequest(f"seconds of a {kind} fault must be above 0")
        if kind in ("rst", "blackhole") and seconds is not None:
            raise BadRequest(f"seconds does not apply to a {kind} fault")
        fault["seconds"] = seconds
        return fault
    if method is None:
        method = "upload.GetFile"
    if not isinstance(method, str) or not re.fullmatch(r"[a-z]+\.[A-Za-z]+|[A-Z][A-Za-z]+", method):
        raise BadRequest("method must be a Telegram method name, e.g. upload.GetFile")
    fault["method"] = method
    if kind != "flood_wait" and seconds is not None:
        raise BadRequest(f"seconds does not apply to a {kind} fault")
    if kind != "rpc_error" and "message" in body:
        raise BadRequest("message applies to rpc_error faults only")
    if kind not in ("rpc_error", "bad_msg") and "code" in body:
        raise BadRequest("code applies to rpc_error and bad_msg faults only")
    if kind != "file_migrate" and "to_dc" in body:
        raise BadRequest("to_dc applies to file_migrate faults only")
    if kind == "flood_wait":
        if seconds is None or seconds < 1 or seconds != int(seconds):
            raise BadRequest("a flood_wait fault needs seconds (a whole number, at least 1)")
        fault.update(seconds=int(seconds), code=420, message=f"FLOOD_WAIT_{int(seconds)}")
    elif kind == "rpc_error":
        code = _int(body, "code")
        message = body.get("message")
        if code is None or not (code in (-503, -500) or 300 <= code <= 599):
            raise BadRequest("an rpc_error fault needs code: 303..599, -500 or -503")
        if not isinstance(message, str) or not _ERROR_ID.fullmatch(message):
            raise BadRequest("an rpc_error fault needs message: an error id such as INTERNAL")
        fault.update(code=code, message=message)
    elif kind == "bad_msg":
        code = _int(body, "code")
        if code is None:
            code = 16
        if code not in BAD_MSG_CODES:
            codes = ", ".join(map(str, sorted(BAD_MSG_CODES)))
            raise BadRequest(f"a bad_msg fault's code must be one of {codes}")
        fault.update(code=code, message="")
    elif kind == "cdn_redirect":
        if method != "upload.GetFile":
            raise BadRequest("a cdn_redirect fault applies to upload.GetFile only")
        fault.update(code=0, message="")
    elif kind == "file_reference_expired":
        fault.update(code=400, message="FILE_REFERENCE_EXPIRED")
    else:  # file_migrate
        to_dc = _int(body, "to_dc")
        if to_dc is None or to_dc not in dcs:
            raise BadRequest(f"a file_migrate fault needs to_dc, one of {sorted(dcs)}")
        fault.update(code=303, message=f"FILE_MIGRATE_{to_dc}", to_dc=to_dc)
    return fault


def parse_limits(body: Any) -> dict[str, float]:
    """A ``POST /limits`` body: at least one of rtt_ms and bandwidth_mib_s (0 = unlimited)."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    _unknown(body, frozenset({"rtt_ms", "bandwidth_mib_s"}))
    limits = {
        name: value
        for name in ("rtt_ms", "bandwidth_mib_s")
        if (value := _number(body, name, lo=0.0, hi=600_000.0)) is not None
    }
    if not limits:
        raise BadRequest("give rtt_ms and/or bandwidth_mib_s")
    return limits


def links_in(message: SentMessage) -> list[str]:
    """Every http(s) URL a bot message carries, in its text or behind its buttons."""
    found = _URL.findall(message.text)
    found += [target for _, target in message.buttons if _URL.fullmatch(target)]
    return list(dict.fromkeys(url.rstrip(".,)") for url in found))


def reply_json(message: SentMessage) -> dict[str, Any]:
    return {
        "message_id": message.message_id,
        "bot": message.bot_id,
        "text": message.text,
        "buttons": [{"text": text, "target": target} for text, target in message.buttons],
        "links": links_in(message),
        "media": message.media_id is not None,
    }


def request_stats(telegram: SimulatedTelegram) -> dict[str, Any]:
    """Requests the world answered, by method and by bot (bot id; a login counts for the bot of
    its token; "0" is a session that is no bot's yet)."""
    by_method: Counter[str] = Counter()
    by_bot: dict[str, Counter[str]] = {}
    for (method, bot_id), n in telegram.bot_counts.items():
        by_method[method] += n
        by_bot.setdefault(str(bot_id), Counter())[method] += n
    return {
        "total": sum(by_method.values()),
        "by_method": dict(sorted(by_method.items())),
        "by_bot": {bot: dict(sorted(c.items())) for bot, c in sorted(by_bot.items())},
        "bots": {str(b.bot_id): b.username for b in telegram.bots.values()},
    }


# ---------------------------------------------------------------------- the HTTP side


class Control:
    """The handlers, bound to one world and its wire server."""

    def __init__(
        self, world: World, wire: WireControls, *, dcs: frozenset[int], info: Mapping[str, Any]
    ) -> None:
        self.world = world
        self.wire = wire
        self.dcs = dcs
        self.info = info

    @property
    def telegram(self) -> SimulatedTelegram:
        return self.world.telegram

    async def get_info(self, request: web.Request) -> web.Response:
        return web.json_response(dict(self.info))

    async def get_stats(self, request: web.Request) -> web.Response:
        stats: dict[str, Any] = {"requests": request_stats(self.telegram)}
        stats.update(self.wire.stats())
        return web.json_response(stats)

    async def post_faults(self, request: web.Request) -> web.Response:
        fault = parse_fault(await _json(request), bots=self.telegram.bots, dcs=self.dcs)
        bot = self.telegram.bots[fault["bot"]] if fault["bot"] is not None else None
        if fault["kind"] in WIRE_KINDS:
            self.wire.add_wire_fault(
                WireFault.make(
                    fault["kind"],
                    bot=fault["bot"],
                    dc=fault["dc"],
                    after=fault["after"],
                    count=fault["count"],
                    seconds=fault["seconds"],
                    probability=fault["probability"],
                )
            )
        else:
            self.telegram.inject(
                fault["method"],
                kind=_WORLD_KINDS.get(fault["kind"], "rpc"),
                code=fault["code"],
                message=fault["message"],
                times=fault["count"],
                skip=fault["after"],
                bot=bot,
                dc=fault["dc"],
                probability=fault["probability"],
            )
        return web.json_response({"fault": fault}, status=201)

    async def delete_faults(self, request: web.Request) -> web.Response:
        cleared = len(self.telegram.faults)
        self.telegram.faults.clear()
        self.wire.clear_wire_faults()
        return web.json_response({"cleared_rpc_faults": cleared})

    async def post_limits(self, request: web.Request) -> web.Response:
        limits = parse_limits(await _json(request))
        self.wire.set_limits(**limits)
        return web.json_response({"limits": limits})

    async def post_bots(self, request: web.Request) -> web.Response:
        """A new bot with read access to the storage channel: another process's own fleet."""
        body = await _json(request)
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        _unknown(body, frozenset({"username"}))
        username = body.get("username") or f"streambot_node{len(self.telegram.bots) + 1}_bot"
        if not isinstance(username, str) or not re.fullmatch(r"[A-Za-z]\w{3,30}bot", username):
            raise BadRequest("username must be 5-32 letters, digits or _, ending in bot")
        if any(b.username == username for b in self.telegram.bots.values()):
            raise BadRequest(f"a bot named {username} exists")
        bot = self.telegram.add_bot(username)
        self.telegram.grant(self.world.channel, bot)
        return web.json_response(
            {"bot": bot.bot_id, "username": bot.username, "token": bot.token}, status=201
        )

    async def post_messages(self, request: web.Request) -> web.Response:
        body = await _json(request)
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        _unknown(body, frozenset({"user_id", "first_name", "bot", "text", "file"}))
        user_id = _int(body, "user_id", lo=1)
        if user_id is None:
            raise BadRequest("user_id is required (a positive integer)")
        bot_id = _int(body, "bot")
        bot = self.world.main_bot if bot_id is None else self.telegram.bots.get(bot_id)
        if bot is None:
            raise BadRequest(f"no bot with id {bot_id}")
        text, spec = body.get("text", ""), body.get("file")
        if not isinstance(text, str) or len(text) > 4096:
            raise BadRequest("text must be a string of at most 4096 characters")
        if not text and spec is None:
            raise BadRequest("give text or file")
        user = self._user(user_id, body.get("first_name"))
        file = await self._file(spec) if spec is not None else None
        try:
            message_id = await self.telegram.send_user_message(user, bot, text=text, file=file)
        except LookupError as exc:  # the bot is not connected (yet, or any more)
            raise web.HTTPConflict(
                text=json.dumps({"error": str(exc)}), content_type="application/json"
            ) from exc
        out: dict[str, Any] = {"message_id": message_id, "user_id": user_id, "bot": bot.bot_id}
        if file is not None:
            out["file"] = {"name": file.name, "size": file.size, "dc": file.dc_id}
        return web.json_response(out, status=201)

    async def get_replies(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            user_id = int(query["user_id"])
            count = int(query.get("count", "0"))
            wait = float(query.get("wait", "0"))
        except KeyError as exc:
            raise BadRequest("user_id is required, e.g. /replies?user_id=100001") from exc
        except ValueError as exc:
            raise BadRequest(
                "user_id and count must be integers, wait a number of seconds"
            ) from exc
        if count < 0 or not 0 <= wait <= MAX_WAIT_SECONDS:
            raise BadRequest(
                f"count must be at least 0 and wait between 0 and {MAX_WAIT_SECONDS:g}"
            )
        user = self.telegram.users.get(user_id) or SimUser(user_id, "?")
        if count and wait:
            # Event driven: returns as soon as the bot's count-th reply is recorded; on timeout
            # the caller compares what it got with what it asked for.
            with contextlib.suppress(TimeoutError):
                await self.telegram.wait_replies(user, count, timeout=wait)
        replies = self.telegram.replies(user)
        return web.json_response({"replies": [reply_json(m) for m in replies]})

    def _user(self, user_id: int, first_name: Any) -> SimUser:
        user = self.telegram.users.get(user_id)
        if user is None:
            if first_name is not None and (not isinstance(first_name, str) or not first_name):
                raise BadRequest("first_name must be a non-empty string")
            user = self.telegram.add_user(first_name or f"User{user_id}", user_id=user_id)
        return user

    async def _file(self, spec: Any) -> Any:
        if not isinstance(spec, dict):
            raise BadRequest('file must be an object: {"path": ...} or {"size": ..., "name": ...}')
        _unknown(spec, frozenset({"path", "size", "name"}))
        if "path" in spec:
            if set(spec) != {"path"}:
                raise BadRequest("a file from disk takes only path")
            path = spec["path"]
            if not isinstance(path, str) or not path:
                raise BadRequest("file.path must be a non-empty string")
            try:
                content = await asyncio.to_thread(DiskContent.of, Path(path))
            except OSError as exc:
                raise BadRequest(f"cannot read file.path: {exc.strerror}") from exc
            if not await asyncio.to_thread(content.path.is_file):
                raise BadRequest("file.path is not a regular file")
            return disk_file(self.telegram, content)
        size, name = spec.get("size"), spec.get("name")
        if isinstance(size, str):
            try:
                size = parse_size(size)
            except ValueError as exc:
                raise BadRequest(f"file.size: {exc}") from exc
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise BadRequest("file.size must be a positive number of bytes (or e.g. 24MiB)")
        if not isinstance(name, str):
            raise BadRequest("a generated file needs a name")
        try:
            synthetic = SyntheticFile.parse(f"{size}:{name}")
        except ValueError as exc:
            raise BadRequest(f"file.name: {exc}") from exc
        return add_content(
            self.telegram, SyntheticContent(synthetic.size, synthetic.seed), synthetic.name
        )


async def _json(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise BadRequest(f"the body is larger than {MAX_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest(f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        return json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from exc


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """BadRequest -> 400 with the reason; HTTP errors (404, 405) as JSON too."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return web.json_response({"error": str(exc)}, status=400)
    except web.HTTPException as exc:
        if exc.content_type == "application/json":
            raise
        return web.json_response({"error": exc.reason}, status=exc.status, headers=_allow(exc))


def _allow(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}


def control_app(
    world: World, wire: WireControls, *, dcs: frozenset[int], info: Mapping[str, Any]
) -> web.Application:
    """The control API as an aiohttp application (served on loopback by the simulator process)."""
    control = Control(world, wire, dcs=dcs, info=info)
    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY_BYTES)
    app.router.add_get("/", control.get_info)
    app.router.add_get("/stats", control.get_stats)
    app.router.add_post("/faults", control.post_faults)
    app.router.add_delete("/faults", control.delete_faults)
    app.router.add_post("/limits", control.post_limits)
    app.router.add_post("/bots", control.post_bots)
    app.router.add_post("/messages", control.post_messages)
    app.router.add_get("/replies", control.get_replies)
    return app
