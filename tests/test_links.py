"""Tests for streambot.links: signed link tokens and link paths."""

from __future__ import annotations

import base64
import contextlib
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streambot import links
from streambot.links import (
    ExpiredLink,
    InvalidLink,
    LinkClaims,
    LinkError,
    link_paths,
    sign,
    verify,
)

SECRET = b"0123456789abcdef-test-secret"
OTHER_SECRET = b"fedcba9876543210-test-secret"
NOW = 1_700_000_000
MAX_ID = 2**63 - 1
# 2099-12-31T23:59:59Z, the last second of "this century".
END_OF_CENTURY = 4_102_444_799


def _raw(token: str) -> bytes:
    """Decode a token's base64 the way an attacker tampering with bytes would."""
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def _encode(raw: bytes) -> str:
    """Encode bytes into the token alphabet without padding."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@pytest.mark.parametrize("message_id", [1, 2, 127, 128, 2**31, 2**32 - 1, 2**32, MAX_ID])
@pytest.mark.parametrize("expires_at", [None, NOW + 1, NOW + 86_400, END_OF_CENTURY, MAX_ID])
def test_round_trip(message_id: int, expires_at: int | None) -> None:
    """Signing then verifying returns exactly the original claims."""
    claims = LinkClaims(message_id=message_id, expires_at=expires_at)
    assert verify(sign(claims, SECRET), SECRET, now=NOW) == claims


@pytest.mark.parametrize("message_id", [1, 2**31, 2**32 - 1, MAX_ID])
@pytest.mark.parametrize("expires_at", [1, NOW - 86_400, NOW - 1])
def test_past_expiry_raises_expired_with_claims(message_id: int, expires_at: int) -> None:
    """An authentic token whose expiry has passed raises ExpiredLink carrying its claims."""
    claims = LinkClaims(message_id=message_id, expires_at=expires_at)
    with pytest.raises(ExpiredLink) as excinfo:
        verify(sign(claims, SECRET), SECRET, now=NOW)
    assert excinfo.value.claims == claims


def test_expiry_boundary() -> None:
    """A token is valid strictly before expires_at and expired from that second on."""
    claims = LinkClaims(message_id=42, expires_at=NOW)
    token = sign(claims, SECRET)
    assert verify(token, SECRET, now=NOW - 1) == claims
    assert verify(token, SECRET, now=NOW - 0.001) == claims
    with pytest.raises(ExpiredLink):
        verify(token, SECRET, now=NOW)
    with pytest.raises(ExpiredLink):
        verify(token, SECRET, now=NOW + 0.5)


def test_nan_clock_fails_closed() -> None:
    """A NaN clock makes an expiring token count as expired rather than valid forever."""
    token = sign(LinkClaims(message_id=1, expires_at=NOW), SECRET)
    with pytest.raises(ExpiredLink):
        verify(token, SECRET, now=float("nan"))


def test_no_expiry_never_expires() -> None:
    """A token without expiry verifies at any time."""
    token = sign(LinkClaims(message_id=7), SECRET)
    assert verify(token, SECRET, now=1e18) == LinkClaims(message_id=7)


@pytest.mark.parametrize("message_id", [1, 2**31, 2**32 - 1])
def test_realistic_token_is_short(message_id: int) -> None:
    """Tokens for 32-bit ids with an expiry this century fit in 40 URL-safe characters."""
    token = sign(LinkClaims(message_id=message_id, expires_at=END_OF_CENTURY), SECRET)
    assert len(token) <= 40
    assert token.isascii()
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize(
    "claims",
    [
        LinkClaims(message_id=1),
        LinkClaims(message_id=2**32 - 1, expires_at=END_OF_CENTURY),
        LinkClaims(message_id=MAX_ID, expires_at=MAX_ID),
    ],
)
def test_every_single_byte_alteration_is_rejected(claims: LinkClaims) -> None:
    """Changing any byte of a token to any other value makes it invalid."""
    raw = _raw(sign(claims, SECRET))
    for pos in range(len(raw)):
        for delta in range(1, 256):
            altered = bytearray(raw)
            altered[pos] ^= delta
            with pytest.raises(InvalidLink):
                verify(_encode(bytes(altered)), SECRET, now=NOW)


def test_truncated_and_extended_tokens_are_rejected() -> None:
    """Dropping trailing bytes or appending any byte invalidates a token."""
    raw = _raw(sign(LinkClaims(message_id=123_456, expires_at=END_OF_CENTURY), SECRET))
    for cut in range(len(raw)):
        with pytest.raises(InvalidLink):
            verify(_encode(raw[:cut]), SECRET, now=NOW)
    for extra in range(256):
        with pytest.raises(InvalidLink):
            verify(_encode(raw + bytes((extra,))), SECRET, now=NOW)


def test_other_secret_is_rejected() -> None:
    """A token signed under another secret is invalid, even though it is well formed."""
    token = sign(LinkClaims(message_id=99, expires_at=END_OF_CENTURY), OTHER_SECRET)
    with pytest.raises(InvalidLink):
        verify(token, SECRET, now=NOW)


def test_same_claims_different_secrets_give_different_tokens() -> None:
    """The secret actually enters the token, so secrets are not interchangeable."""
    claims = LinkClaims(message_id=99)
    assert sign(claims, SECRET) != sign(claims, OTHER_SECRET)


def test_expired_check_happens_after_signature() -> None:
    """A forged expired token is reported as invalid, never as merely expired."""
    token = sign(LinkClaims(message_id=5, expires_at=1), OTHER_SECRET)
    with pytest.raises(InvalidLink):
        verify(token, SECRET, now=NOW)


_VALID = sign(LinkClaims(message_id=2**31, expires_at=END_OF_CENTURY), SECRET)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "!!!",
        "A",
        "====",
        "A" * 10_000,
        "ä" * 30,
        "\x00" * 30,
        _VALID + "=",
        _VALID + "==",
        _VALID[:-2] + "==",
        " " + _VALID,
        _VALID + "\n",
        _VALID[:10] + "." + _VALID[11:],
        _VALID.replace("-", "+").replace("_", "/") if ("-" in _VALID or "_" in _VALID) else "+/",
        _VALID[:-1],
        _VALID + "A",
        "A" * len(_VALID),
        "é" + _VALID[1:],
    ],
)
def test_garbage_tokens_are_invalid(token: str) -> None:
    """Malformed strings of every kind raise InvalidLink."""
    with pytest.raises(InvalidLink):
        verify(token, SECRET, now=NOW)


@pytest.mark.parametrize("token", [None, b"abc", 12345])
def test_non_string_tokens_are_invalid(token: object) -> None:
    """A non-str token is rejected as invalid rather than crashing the route."""
    with pytest.raises(InvalidLink):
        verify(token, SECRET, now=NOW)  # type: ignore[arg-type]


def test_non_canonical_base64_spelling_is_rejected() -> None:
    """Setting the unused low bits of the last character (same bytes) is rejected."""
    token = sign(LinkClaims(message_id=1), SECRET)  # 19 bytes: last char carries 4 spare bits
    assert len(_raw(token)) % 3 != 0
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = token[:-1] + alphabet[alphabet.index(token[-1]) ^ 1]
    assert _raw(twin) == _raw(token)
    with pytest.raises(InvalidLink):
        verify(twin, SECRET, now=NOW)


def _payload(*parts: bytes) -> bytes:
    """Concatenate raw payload pieces for hand-sealed tokens."""
    return b"".join(parts)


def test_hand_sealed_valid_payload_verifies() -> None:
    """The private _seal helper produces real tokens, so the malformed-payload cases below
    are rejected by the parser and not by a signature mismatch."""
    token = links._seal(_payload(b"\x01", b"\x2a", b"\x00"), SECRET)
    assert verify(token, SECRET, now=NOW) == LinkClaims(message_id=42)


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (_payload(b"\x02", b"\x2a", b"\x00"), "unknown version"),
        (_payload(b"\x00", b"\x2a", b"\x00"), "version zero"),
        (_payload(b"\x01", b"\x2a", b"\x00", b"\x00"), "trailing byte"),
        (_payload(b"\x01", b"\x2a", b"\x00", b"junk"), "trailing garbage"),
        (_payload(b"\x01", b"\x00", b"\x00"), "message id zero"),
        (_payload(b"\x01", b"\xaa\x00", b"\x00"), "non-minimal message id varint"),
        (_payload(b"\x01", b"\x2a", b"\x80\x00"), "non-minimal expiry varint"),
        (_payload(b"\x01", b"\xff" * 9 + b"\x01", b"\x00"), "message id over 63 bits"),
        (_payload(b"\x01", b"\x2a", b"\xff" * 9 + b"\x01"), "expiry over 63 bits"),
        (_payload(b"\x01", b"\x2a", b"\x80"), "truncated expiry varint"),
        (_payload(b"\x01", b"\x2a"), "missing expiry"),
    ],
)
def test_authentic_but_malformed_payloads_are_invalid(payload: bytes, why: str) -> None:
    """Correctly MACed payloads that sign() never produces are still rejected."""
    with pytest.raises(InvalidLink):
        verify(links._seal(payload, SECRET), SECRET, now=NOW)


def test_short_secret_is_a_programming_error() -> None:
    """Secrets under 16 bytes raise ValueError in both sign and verify."""
    with pytest.raises(ValueError, match="16 bytes"):
        sign(LinkClaims(message_id=1), b"x" * 15)
    with pytest.raises(ValueError, match="16 bytes"):
        verify("garbage", b"x" * 15, now=NOW)
    assert sign(LinkClaims(message_id=1), b"x" * 16)


@pytest.mark.parametrize(
    ("message_id", "expires_at"),
    [(0, None), (-1, None), (2**63, None), (True, None), (1, 0), (1, -5), (1, 2**63)],
)
def test_unencodable_claims_are_rejected(message_id: int, expires_at: int | None) -> None:
    """Claims outside the encodable ranges fail at construction with ValueError."""
    with pytest.raises(ValueError, match="must be"):
        LinkClaims(message_id=message_id, expires_at=expires_at)


_claims = st.builds(
    LinkClaims,
    message_id=st.integers(min_value=1, max_value=MAX_ID),
    expires_at=st.none() | st.integers(min_value=1, max_value=MAX_ID),
)
_secrets = st.binary(min_size=16, max_size=64)
_token_alphabet = st.sampled_from(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_="
)


@given(claims=_claims, secret=_secrets)
def test_property_round_trip(claims: LinkClaims, secret: bytes) -> None:
    """verify(sign(c)) == c for any valid claims and secret (now=0 precedes every expiry)."""
    assert verify(sign(claims, secret), secret, now=0) == claims


@given(
    token=st.text() | st.text(_token_alphabet, min_size=20, max_size=60),
    now=st.floats(allow_nan=True),
)
def test_property_arbitrary_text_raises_only_link_errors(token: str, now: float) -> None:
    """Any string either verifies or raises a LinkError subclass, never anything else."""
    with contextlib.suppress(LinkError):
        verify(token, SECRET, now=now)


@given(claims=_claims, position=st.integers(min_value=0), delta=st.integers(1, 255))
def test_property_altered_byte_rejected(claims: LinkClaims, position: int, delta: int) -> None:
    """For any claims, altering any byte of the token makes it invalid."""
    raw = bytearray(_raw(sign(claims, SECRET)))
    raw[position % len(raw)] ^= delta
    with pytest.raises(InvalidLink):
        verify(_encode(bytes(raw)), SECRET, now=0)


@pytest.mark.parametrize(
    ("name", "segment"),
    [
        ("movie.mkv", "movie.mkv"),
        ("my movie (2024).mp4", "my%20movie%20%282024%29.mp4"),
        ("фильм.mp4", "%D1%84%D0%B8%D0%BB%D1%8C%D0%BC.mp4"),
        ("a/b/c.txt", "a_b_c.txt"),
        ("../etc/passwd", ".._etc_passwd"),
        ("what?#%.bin", "what%3F%23%25.bin"),
        ("tab\there\nnl\x7fdel\x85c1.txt", "tab_here_nl_del_c1.txt"),
        ("emoji 🎬.mp4", "emoji%20%F0%9F%8E%AC.mp4"),
        ("back\\slash&amp=1+2", "back%5Cslash%26amp%3D1%2B2"),
        ("lone\ud800surrogate", "lone_surrogate"),
        ("", "file"),
        (".", "file"),
        ("..", "file"),
        ("...", "..."),
        ("/", "_"),
    ],
)
def test_link_paths_quoting(name: str, segment: str) -> None:
    """File names become one safe, percent-encoded path segment under /dl and /watch."""
    token = sign(LinkClaims(message_id=1), SECRET)
    assert link_paths(token, name) == (f"/dl/{token}/{segment}", f"/watch/{token}/{segment}")


@pytest.mark.parametrize("token", ["", "a/b", "a b", "a?b", "tok%2F"])
def test_link_paths_rejects_non_token(token: str) -> None:
    """A string that sign() could not have produced is refused instead of spliced into a path."""
    with pytest.raises(ValueError, match="token"):
        link_paths(token, "x")


@given(name=st.text())
def test_property_link_paths_single_safe_segment(name: str) -> None:
    """Any name yields exactly one non-empty ASCII segment that decodes to the cleaned name."""
    token = sign(LinkClaims(message_id=1), SECRET)
    dl, watch = link_paths(token, name)
    assert watch == "/watch" + dl.removeprefix("/dl")
    parts = dl.split("/")
    assert parts[:3] == ["", "dl", token]
    assert len(parts) == 4
    segment = parts[3]
    assert segment.isascii()
    assert segment.isprintable()
    decoded = unquote(segment, errors="strict")
    assert decoded not in ("", ".", "..")
    assert "/" not in decoded
    if name not in ("", ".", "..") and "/" not in name and name.isprintable():
        assert decoded == name


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("/dl/AbCdEfGhIjKlMnOp/movie.mp4", "/dl/AbCdEf…/movie.mp4"),
        ("/watch/AbCdEfGhIjKlMnOp/a%20b.mkv?t=1", "/watch/AbCdEf…/a%20b.mkv?t=1"),
        ("/dl/AbCdEfGhIjKlMnOp", "/dl/AbCdEf…"),
        ("/dl/short/x", "/dl/short/x"),  # nothing worth hiding
        ("/healthz", "/healthz"),
        ("/api/info", "/api/info"),
        ("/static/dl/AbCdEfGhIjKlMnOp", "/static/dl/AbCdEfGhIjKlMnOp"),
    ],
)
def test_redact_keeps_a_short_prefix_of_link_tokens(path: str, shown: str) -> None:
    assert links.redact(path) == shown


def test_redact_never_shows_a_whole_signed_token() -> None:
    token = links.sign(links.LinkClaims(message_id=42), SECRET)
    download, watch = links.link_paths(token, "x.bin")
    for path in (download, watch):
        assert token not in links.redact(path)
        assert token[: links.REDACTED_PREFIX] in links.redact(path)
