"""Signed, compact link tokens for ``/dl/<token>/<name>`` and ``/watch/<token>/<name>``.

A token names one stored Telegram message (its id in the storage channel) and may carry an
expiry. It is authenticated with HMAC-SHA256 under a server secret, so links cannot be forged
or retargeted at other messages without the secret, and the server needs no database to
check them.

Binary layout (then URL-safe base64 without padding)::

    version (1 byte) | varint message_id | varint expires_at (0 = none) | tag (16 bytes)

Varints are unsigned LEB128 and must be minimal: every accepted token has exactly one
encoding, so a token string is a canonical name for its claims. For realistic ids
(message_id < 2**32, an expiry within this century) this is 1 + 5 + 5 + 16 = 27 bytes,
i.e. 36 characters.

This module is pure (stdlib only, no clock): callers pass ``now`` so verification is
deterministic and testable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote

__all__ = [
    "ExpiredLink",
    "InvalidLink",
    "LinkClaims",
    "LinkError",
    "link_paths",
    "redact",
    "sign",
    "verify",
]

_VERSION = 1
# Prefixed to every MAC input so a secret shared with another feature can never turn a
# signature made there into a valid link token here (domain separation).
_MAC_CONTEXT = b"streambot-link\x00"
# 128 bits. A MAC is only attacked online: without the secret an attacker cannot check
# guesses offline, and birthday collisions do not help forging, so each forged request
# succeeds with probability 2**-128 -- unreachable at any request rate. Truncating
# HMAC-SHA256 to >= 64 bits is explicitly allowed by RFC 2104 §5 and NIST SP 800-107.
_TAG_LEN = 16
_MIN_SECRET_LEN = 16
_MAX_VALUE = (1 << 63) - 1  # ids and expiries are signed 64-bit on Telegram's side
_MAX_VARINT_LEN = 9  # 9 * 7 = 63 bits: exactly enough for _MAX_VALUE
_MIN_RAW_LEN = 1 + 1 + 1 + _TAG_LEN
_MAX_RAW_LEN = 1 + _MAX_VARINT_LEN + _MAX_VARINT_LEN + _TAG_LEN
# Unpadded base64 of n bytes is ceil(4n/3) characters; checked before decoding so that
# arbitrarily long garbage costs nothing.
_MIN_TOKEN_LEN = -(-4 * _MIN_RAW_LEN // 3)
_MAX_TOKEN_LEN = -(-4 * _MAX_RAW_LEN // 3)
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+")
# Characters that must not reach the URL path: "/" would add a path segment, control
# characters are invisible/hostile in logs, and lone surrogates cannot be UTF-8 encoded.
_UNSAFE_NAME_CATEGORIES = frozenset({"Cc", "Cs"})
_DEFAULT_FILE_NAME = "file"


class LinkError(Exception):
    """Base class for every error :func:`verify` raises about a token."""


class InvalidLink(LinkError):
    """The token is malformed, altered, forged or signed with another secret (HTTP 403)."""


class ExpiredLink(LinkError):
    """The token is authentic but its expiry has passed (HTTP 410).

    ``claims`` is attached because the signature was valid, so callers may trust it, e.g. to
    tell the user which file the dead link pointed to.
    """

    def __init__(self, claims: LinkClaims) -> None:
        super().__init__(f"link for message {claims.message_id} expired at {claims.expires_at}")
        self.claims = claims


@dataclass(frozen=True, slots=True)
class LinkClaims:
    """What a token asserts: which stored message, and until when (unix seconds) if at all."""

    message_id: int
    expires_at: int | None = None

    def __post_init__(self) -> None:
        # Validated here so an unencodable claim is a programming error at construction,
        # not a surprise when signing (and so a decoded token can never hold nonsense).
        if not _is_positive_int63(self.message_id):
            raise ValueError(f"message_id must be an int in 1..2**63-1, got {self.message_id!r}")
        if self.expires_at is not None and not _is_positive_int63(self.expires_at):
            # 0 is reserved on the wire for "no expiry", so expiries start at 1.
            raise ValueError(
                f"expires_at must be None or an int in 1..2**63-1, got {self.expires_at!r}"
            )


def sign(claims: LinkClaims, secret: bytes) -> str:
    """Return the URL-safe token for ``claims`` authenticated under ``secret``."""
    _check_secret(secret)
    payload = (
        bytes((_VERSION,))
        + _encode_varint(claims.message_id)
        + _encode_varint(claims.expires_at or 0)
    )
    return _seal(payload, secret)


def verify(token: str, secret: bytes, *, now: float) -> LinkClaims:
    """Return the claims of an authentic, unexpired ``token``.

    Raises :class:`InvalidLink` for anything not produced by :func:`sign` with this secret,
    and :class:`ExpiredLink` once ``now >= expires_at``. No other exception escapes for any
    ``token`` value; a too-short ``secret`` is a programming error (``ValueError``).
    """
    _check_secret(secret)
    raw = _decode_token(token)
    payload, tag = raw[:-_TAG_LEN], raw[-_TAG_LEN:]
    # The tag is checked before the payload is parsed, so nothing unauthenticated is
    # interpreted, and in constant time so response timing leaks nothing about the tag.
    if not hmac.compare_digest(tag, _mac(payload, secret)):
        raise InvalidLink("bad signature")
    claims = _parse_payload(payload)
    # Written as "not before expiry" so a NaN clock fails closed (counts as expired).
    if claims.expires_at is not None and not now < claims.expires_at:
        raise ExpiredLink(claims)
    return claims


def link_paths(token: str, file_name: str) -> tuple[str, str]:
    """Return the ``(download, watch)`` URL paths for ``token`` and a display ``file_name``.

    The name is cosmetic (the token alone identifies the file) but ends up in the URL, so it
    is made into exactly one safe path segment: "/", control characters and lone surrogates
    become "_", dot segments ("." / "..", which clients would resolve away) and the empty
    name become "file", and the rest is percent-encoded as UTF-8.
    """
    if not isinstance(token, str) or _TOKEN_RE.fullmatch(token) is None:
        raise ValueError("token must be a URL-safe base64 string as returned by sign()")
    segment = quote(_clean_file_name(file_name), safe="")
    return f"/dl/{token}/{segment}", f"/watch/{token}/{segment}"


#: Characters of a token kept by :func:`redact`: enough to tell two links apart in a log,
#: far too few to use one (the MAC alone is 16 bytes).
REDACTED_PREFIX = 6
_LINK_PATH_RE = re.compile(r"^(/(?:dl|watch)/)([A-Za-z0-9_-]+)")


def redact(path: str) -> str:
    """``/dl/<token>/<name>`` -> ``/dl/AbCdEf…/<name>``: what a log may show of a link path.

    A link is a bearer credential; access logs are copied, shipped and pasted into bug reports.
    Other paths are returned unchanged.
    """
    match = _LINK_PATH_RE.match(path)
    if match is None or len(match[2]) <= REDACTED_PREFIX:
        return path
    return f"{match[1]}{match[2][:REDACTED_PREFIX]}…{path[match.end() :]}"


def _clean_file_name(file_name: str) -> str:
    cleaned = "".join(
        "_" if ch == "/" or unicodedata.category(ch) in _UNSAFE_NAME_CATEGORIES else ch
        for ch in file_name
    )
    if cleaned in ("", ".", ".."):
        return _DEFAULT_FILE_NAME
    return cleaned


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, bytes | bytearray):
        raise TypeError(f"secret must be bytes, got {type(secret).__name__}")
    if len(secret) < _MIN_SECRET_LEN:
        raise ValueError(f"secret must be at least {_MIN_SECRET_LEN} bytes")


def _is_positive_int63(value: object) -> bool:
    # bool is an int subclass; True as a message id is certainly a bug.
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= _MAX_VALUE


def _mac(payload: bytes, secret: bytes) -> bytes:
    return hmac.new(secret, _MAC_CONTEXT + payload, hashlib.sha256).digest()[:_TAG_LEN]


def _seal(payload: bytes, secret: bytes) -> str:
    """Append the tag and encode; separate from :func:`sign` so tests can seal odd payloads."""
    return base64.urlsafe_b64encode(payload + _mac(payload, secret)).rstrip(b"=").decode("ascii")


def _decode_token(token: object) -> bytes:
    if not isinstance(token, str) or not _MIN_TOKEN_LEN <= len(token) <= _MAX_TOKEN_LEN:
        raise InvalidLink("bad token length")
    # The decoder would otherwise accept "=" padding, "+" and "/" (via altchars) and, with
    # validate=False, silently skip junk; only the exact alphabet sign() emits is allowed.
    if _TOKEN_RE.fullmatch(token) is None:
        raise InvalidLink("bad token characters")
    if len(token) % 4 == 1:  # no byte string encodes to 4k+1 characters
        raise InvalidLink("bad token length")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidLink("bad base64") from exc
    # Unused low bits of the last character are ignored by the decoder; re-encoding rejects
    # such alternative spellings so each token has a single canonical string.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
        raise InvalidLink("non-canonical base64")
    if not _MIN_RAW_LEN <= len(raw) <= _MAX_RAW_LEN:
        raise InvalidLink("bad token length")
    return raw


def _parse_payload(payload: bytes) -> LinkClaims:
    if payload[0] != _VERSION:
        raise InvalidLink(f"unknown token version {payload[0]}")
    message_id, pos = _decode_varint(payload, 1)
    expires_at, pos = _decode_varint(payload, pos)
    if pos != len(payload):
        raise InvalidLink("trailing bytes in token")
    try:
        return LinkClaims(message_id=message_id, expires_at=expires_at or None)
    except ValueError as exc:  # e.g. message_id 0
        raise InvalidLink(str(exc)) from exc


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _decode_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode a minimal LEB128 varint of at most 63 bits at ``pos``; return (value, new pos)."""
    value = 0
    for i in range(_MAX_VARINT_LEN):
        if pos + i >= len(data):
            raise InvalidLink("truncated varint")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:  # a trailing 0x00 group means a padded, non-minimal form
                raise InvalidLink("non-minimal varint")
            return value, pos + i + 1
    raise InvalidLink("varint too long")
