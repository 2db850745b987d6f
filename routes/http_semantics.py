"""HTTP semantics for one GET/HEAD of a stored file: conditional requests, Range, headers.

The concept is *request evaluation against a representation*: given the request method, its
header fields and what we know about the stored file (size, strong ETag, Last-Modified),
:func:`evaluate` decides the response status -- 200, 206, 304, 412 or 416 -- and, for 206,
which byte ranges to send. Everything else here is small helpers for the response headers
that go with that decision (ETag, HTTP-date, Content-Range, Content-Disposition and the
``multipart/byteranges`` framing).

Rules follow RFC 9110 (preconditions §13, Range §14, 206/416 §15.3.7/§15.5.17) with nginx's
range filter as the model where the RFC leaves a choice (OWS tolerance, 416 for syntax
errors, declining abusive multi-range requests, ignoring Range on empty files).

Conventions callers rely on:

* :func:`parse_range` returns ``None`` when the Range header must be *ignored* (serve 200 with
  the full body), a non-empty tuple of ranges in request order when it is satisfiable, and
  raises :class:`RangeNotSatisfiable` when the answer must be 416. It never returns ``()``.
* :func:`evaluate` never raises for any header content; a 416 :class:`Decision` pairs with
  ``Content-Range: <unsatisfied_content_range(size)>``.

This module is pure: stdlib only, no I/O, no clock except the RFC 850 two-digit-year pivot
in :func:`parse_http_date`, which accepts an explicit ``now``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

__all__ = [
    "ByteRange",
    "Decision",
    "MultipartLayout",
    "RangeNotSatisfiable",
    "Representation",
    "content_disposition",
    "disposition_is_inline",
    "etag_for",
    "evaluate",
    "http_date",
    "multipart_layout",
    "parse_http_date",
    "parse_range",
    "unsatisfied_content_range",
]

# OWS = *( SP / HTAB ) (RFC 9110 §5.6.3).
_OWS = " \t"

# The six request fields this module interprets (lower-cased; field names are
# case-insensitive, RFC 9110 §5.1).
_FIELDS = frozenset(
    {"if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "if-range", "range"}
)


class RangeNotSatisfiable(Exception):
    """The Range header must be answered with 416 (RFC 9110 §15.5.17).

    Raised by :func:`parse_range` for a syntactically invalid byte-range set (nginx answers
    416 there; RFC 9110 §14.2 allows ignoring or rejecting) and for a valid set in which no
    range overlaps the representation.
    """


@dataclass(frozen=True, slots=True)
class ByteRange:
    """An inclusive byte range ``[start, end]``, as in ``bytes=start-end`` (RFC 9110 §14.1.2)."""

    start: int
    end: int

    def __post_init__(self) -> None:
        # RFC 9110 §14.4: a Content-Range with last < first is invalid, so never build one.
        if self.start < 0 or self.end < self.start:
            raise ValueError(f"invalid byte range {self.start}-{self.end}")

    @property
    def length(self) -> int:
        """Number of bytes in the range (both ends inclusive)."""
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        """The ``Content-Range`` value for this range of a ``size``-byte file (RFC 9110 §14.4)."""
        return f"bytes {self.start}-{self.end}/{size}"


@dataclass(frozen=True, slots=True)
class Representation:
    """What the server knows about the stored file, used as validators (RFC 9110 §8.8).

    ``etag`` must be a strong, quoted entity-tag (see :func:`etag_for`): If-Range only works
    with strong validators (§13.1.5). ``last_modified`` must be timezone-aware; sub-second
    precision is discarded when comparing, because HTTP-dates have whole seconds (§5.6.7).
    """

    size: int
    etag: str
    last_modified: datetime

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError("size must be >= 0")
        if not _is_opaque_tag(self.etag):
            raise ValueError(f"etag must be a strong quoted entity-tag, got {self.etag!r}")
        if self.last_modified.utcoffset() is None:
            raise ValueError("last_modified must be timezone-aware")


@dataclass(frozen=True, slots=True)
class Decision:
    """Outcome of :func:`evaluate`: the status and, for 206, the ranges to send.

    ``ranges`` is ``()`` for 200/304/412/416, one range for a single-part 206 (send
    ``Content-Range`` and a body of exactly that range) and two or more for a
    ``multipart/byteranges`` 206 (see :func:`multipart_layout`; no top-level Content-Range,
    RFC 9110 §15.3.7.2).
    """

    status: int
    ranges: tuple[ByteRange, ...] = ()

    @property
    def multipart(self) -> bool:
        """Whether the 206 body is multipart; never for a single range (RFC 9110 §15.3.7)."""
        return len(self.ranges) > 1


@dataclass(frozen=True, slots=True)
class MultipartLayout:
    """Byte-exact framing of a ``multipart/byteranges`` body, without the part data.

    Write, for each ``(header, byte_range)`` in ``parts``, ``header`` and then the file bytes
    of ``byte_range``; finish with ``closing``. ``content_length`` is the exact body length.
    """

    boundary: str
    parts: tuple[tuple[bytes, ByteRange], ...]
    closing: bytes
    content_length: int

    @property
    def content_type(self) -> str:
        """The response ``Content-Type`` (RFC 9110 §14.6)."""
        return f"multipart/byteranges; boundary={self.boundary}"


# --------------------------------------------------------------------------- preconditions


def evaluate(
    method: str, headers: Mapping[str, str], rep: Representation, *, max_ranges: int = 16
) -> Decision:
    """Decide the response to a GET/HEAD of ``rep`` from the request's header fields.

    Order is RFC 9110 §13.2.2: If-Match, If-Unmodified-Since, If-None-Match,
    If-Modified-Since, then If-Range + Range (§14.2: Range is considered only when the
    response would otherwise be 200, and only for GET). ``method`` is case-sensitive
    (§9.1). ``headers`` may be any mapping with any key casing, including aiohttp's
    ``CIMultiDictProxy``; repeated fields are combined as a comma-separated list (§5.3).
    Never raises for any header content.
    """
    fields = _collect_fields(headers)
    safe = method in ("GET", "HEAD")
    last_modified = rep.last_modified.replace(microsecond=0)

    # §13.2.2 step 1-2: If-Match, else If-Unmodified-Since.
    if_match = fields.get("if-match")
    if if_match is not None:
        # §13.1.1: strong comparison; an unparsable value matches nothing, so it fails
        # closed with 412 (as nginx does).
        if not _etag_list_matches(if_match, rep.etag, weak=False):
            return Decision(412)
    else:
        if_unmodified = fields.get("if-unmodified-since")
        if if_unmodified is not None:
            # §13.1.4: an invalid date (or a list of dates) is ignored.
            date = parse_http_date(if_unmodified)
            if date is not None and last_modified > date:
                return Decision(412)

    # §13.2.2 step 3-4: If-None-Match, else If-Modified-Since (GET/HEAD only).
    if_none_match = fields.get("if-none-match")
    if if_none_match is not None:
        # §13.1.2: weak comparison; 304 for GET/HEAD, 412 for any other method.
        if _etag_list_matches(if_none_match, rep.etag, weak=True):
            return Decision(304 if safe else 412)
    elif safe:
        if_modified = fields.get("if-modified-since")
        if if_modified is not None:
            # §13.1.3: invalid dates are ignored; "not modified" means Last-Modified <= date.
            date = parse_http_date(if_modified)
            if date is not None and last_modified <= date:
                return Decision(304)

    # §14.2: range handling is defined for GET only; HEAD+Range gets the 200 headers.
    range_value = fields.get("range")
    if method != "GET" or range_value is None:
        return Decision(200)
    # §13.1.5: If-Range is evaluated only together with Range; false means "ignore Range",
    # never 412.
    if_range = fields.get("if-range")
    if if_range is not None and not _if_range_holds(if_range, rep.etag, last_modified):
        return Decision(200)
    try:
        ranges = parse_range(range_value, rep.size, max_ranges=max_ranges)
    except RangeNotSatisfiable:
        return Decision(416)
    if ranges is None:
        return Decision(200)
    return Decision(206, ranges)


def _collect_fields(headers: Mapping[str, str]) -> dict[str, str]:
    """Lower-case the fields we use, joining repeats with ", " (RFC 9110 §5.3).

    Joining also gives the right answer for singleton fields sent twice: two dates become an
    invalid date (ignored, §13.1.3/§13.1.4) and two Range values become a syntax error.
    """
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if key in _FIELDS:
            out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _is_etagc(ch: str) -> bool:
    # etagc = %x21 / %x23-7E / obs-text (RFC 9110 §8.8.3)
    code = ord(ch)
    return code == 0x21 or 0x23 <= code <= 0x7E or 0x80 <= code <= 0xFF


def _is_opaque_tag(value: str) -> bool:
    return (
        len(value) >= 2
        and value[0] == '"'
        and value[-1] == '"'
        and all(_is_etagc(ch) for ch in value[1:-1])
    )


def _parse_entity_tags(value: str) -> list[tuple[bool, str]] | None:
    """Parse ``1#entity-tag`` into ``(weak, opaque_tag)`` pairs; ``None`` if malformed.

    A scanner rather than ``split(",")`` because ``,`` is a legal etagc inside quotes
    (RFC 9110 §8.8.3). Empty list elements are skipped (§5.6.1.2).
    """
    tags: list[tuple[bool, str]] = []
    i, n = 0, len(value)
    while True:
        while i < n and value[i] in " \t,":
            i += 1
        if i == n:
            break
        weak = value.startswith("W/", i)
        if weak:
            i += 2
        if i >= n or value[i] != '"':
            return None
        j = i + 1
        while j < n and _is_etagc(value[j]):
            j += 1
        if j >= n or value[j] != '"':
            return None
        tags.append((weak, value[i : j + 1]))
        i = j + 1
        while i < n and value[i] in _OWS:
            i += 1
        if i < n and value[i] != ",":
            return None
    return tags or None


def _etag_list_matches(value: str, etag: str, *, weak: bool) -> bool:
    """Evaluate an If-Match (strong) or If-None-Match (weak) field value against ``etag``.

    ``*`` matches any current representation (§13.1.1, §13.1.2); a stored file always has
    one. A malformed value matches nothing.
    """
    if value.strip(_OWS) == "*":
        return True
    tags = _parse_entity_tags(value)
    if tags is None:
        return False
    # §8.8.3.2: weak comparison ignores W/, strong comparison needs both tags strong.
    return any(tag == etag and (weak or not is_weak) for is_weak, tag in tags)


def _if_range_holds(value: str, etag: str, last_modified: datetime) -> bool:
    """Evaluate If-Range (RFC 9110 §13.1.5).

    A DQUOTE among the first three characters marks an entity-tag (covers ``W/"``); it must
    match strongly, so a weak tag never does. Otherwise it is a date, which must equal
    Last-Modified exactly (nginx and Go agree; aiohttp's ``<=`` is wrong). Telegram files are
    immutable per unique id, so Last-Modified is usable as a strong validator (§8.8.2.2).
    Anything else is false.
    """
    value = value.strip(_OWS)
    if '"' in value[:3]:
        tags = _parse_entity_tags(value)
        return tags is not None and len(tags) == 1 and tags[0] == (False, etag)
    date = parse_http_date(value)
    return date is not None and date == last_modified


# --------------------------------------------------------------------------- Range


def parse_range(value: str, size: int, *, max_ranges: int = 16) -> tuple[ByteRange, ...] | None:
    """Resolve a Range field value against a ``size``-byte representation.

    Returns ``None`` to *ignore* the header (serve 200 with the full body) when:

    * the unit is not ``bytes`` (case-insensitive) or there is no ``=`` -- RFC 9110 §14.2
      MUST ignore unknown units;
    * ``size == 0`` -- §14.2 MAY ignore for empty content, nginx declines;
    * more than ``max_ranges`` range-specs, or the satisfiable ranges add up to more than
      ``size`` -- nginx's guard against overlapping/many-small-range abuse (§14.2 allows it).

    Raises :class:`RangeNotSatisfiable` (answer 416) for any syntax error in the range-set
    (nginx; §14.2 allows rejecting) or when no range-spec is satisfiable (§14.1.2).

    Otherwise returns the satisfiable ranges in request order, at least one. ``first-last``
    is inclusive and ``last`` is clamped to ``size - 1``; ``-N`` is the last N bytes, the
    whole file if ``N >= size``; ``-0`` and ``first >= size`` are unsatisfiable and dropped,
    as is ``first > last`` (nginx skips it rather than rejecting the whole set). OWS around
    ``=``, ``,`` and ``-`` is tolerated. Numerals of any length are safe (§14.1.1 warns of
    overflow): values are saturated at ``size``, which resolves identically.
    """
    if size < 0:
        raise ValueError("size must be >= 0")
    unit, eq, range_set = value.partition("=")
    if not eq or unit.strip(_OWS).lower() != "bytes":
        return None
    if size == 0:
        return None

    # (first, last) with first=None meaning a suffix-range of `last` bytes.
    specs: list[tuple[int | None, int | None]] = []
    for element in range_set.split(","):
        element = element.strip(_OWS)
        if not element:
            continue  # empty list elements are allowed (§5.6.1.2)
        first_text, dash, last_text = element.partition("-")
        if not dash:
            raise RangeNotSatisfiable(f"invalid range-spec {element!r}")
        first_text, last_text = first_text.strip(_OWS), last_text.strip(_OWS)
        last = _parse_position(last_text, size) if last_text else None
        if last_text and last is None:
            raise RangeNotSatisfiable(f"invalid range-spec {element!r}")
        if first_text:
            first = _parse_position(first_text, size)
            if first is None:
                raise RangeNotSatisfiable(f"invalid range-spec {element!r}")
            specs.append((first, last))
        elif last is None:
            raise RangeNotSatisfiable(f"invalid range-spec {element!r}")  # bare "-"
        else:
            specs.append((None, last))
    if not specs:
        raise RangeNotSatisfiable("empty range-set")
    if len(specs) > max_ranges:
        return None

    ranges: list[ByteRange] = []
    for first, last in specs:
        if first is None:
            assert last is not None  # a suffix always has a length
            if last == 0:
                continue  # "-0" selects nothing (§14.1.2)
            ranges.append(ByteRange(size - min(last, size), size - 1))
        elif first >= size or (last is not None and last < first):
            continue
        else:
            ranges.append(ByteRange(first, size - 1 if last is None else min(last, size - 1)))
    if not ranges:
        raise RangeNotSatisfiable(f"no range satisfiable for {size} bytes")
    if sum(r.length for r in ranges) > size:
        return None
    return tuple(ranges)


def _parse_position(text: str, cap: int) -> int | None:
    """``1*DIGIT`` as an int saturated at ``cap``; ``None`` if not ASCII digits.

    ``str.isdigit`` alone accepts other scripts' digits and ``int`` accepts ``_``/``+``/space
    and refuses numerals over 4300 digits, so check ASCII digits first and never hand
    ``int`` more digits than ``cap`` has.
    """
    if not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(cap)):
        return cap
    return min(int(digits), cap)


def unsatisfied_content_range(size: int) -> str:
    """The ``Content-Range`` value a 416 carries: ``bytes */size`` (RFC 9110 §15.5.17)."""
    return f"bytes */{size}"


# --------------------------------------------------------------------------- validators


def etag_for(unique_id: str) -> str:
    """A strong ETag for a Telegram file, from its ``file_unique_id``.

    The unique id names the file's content across re-uploads and bots, so it is the right
    version identity (RFC 9110 §8.8.3), unlike a local mtime. Hashing keeps the tag short,
    fixed-length and limited to base64url characters whatever the id contains.
    """
    digest = hashlib.sha256(unique_id.encode("utf-8", "surrogatepass")).digest()[:18]
    return '"' + base64.urlsafe_b64encode(digest).decode("ascii") + '"'


_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_LONG_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAY = "|".join(_DAY_NAMES)
_MON = "|".join(_MONTHS)
_TIME = r"([0-9]{2}):([0-9]{2}):([0-9]{2})"
# RFC 9110 §5.6.7. The grammar is case-sensitive; day names are checked for shape only,
# like nginx and Go, not for agreement with the date.
_IMF_FIXDATE = re.compile(rf"(?:{_DAY}), ([0-9]{{2}}) ({_MON}) ([0-9]{{4}}) {_TIME} GMT")
_RFC850_DATE = re.compile(
    rf"(?:{'|'.join(_LONG_DAY_NAMES)}), ([0-9]{{2}})-({_MON})-([0-9]{{2}}) {_TIME} GMT"
)
_ASCTIME_DATE = re.compile(rf"(?:{_DAY}) ({_MON}) ([0-9]{{2}}| [0-9]) {_TIME} ([0-9]{{4}})")


def http_date(dt: datetime) -> str:
    """Format an aware datetime as IMF-fixdate, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``.

    Names come from tables, not ``strftime``, whose ``%a``/``%b`` follow the C locale
    (RFC 9110 §5.6.7 requires the English names). Sub-second precision is dropped.
    """
    if dt.utcoffset() is None:
        raise ValueError("http_date needs a timezone-aware datetime")
    dt = dt.astimezone(UTC)
    return (
        f"{_DAY_NAMES[dt.weekday()]}, {dt.day:02d} {_MONTHS[dt.month - 1]} {dt.year:04d} "
        f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d} GMT"
    )


def parse_http_date(value: str, *, now: datetime | None = None) -> datetime | None:
    """Parse an HTTP-date in any of the three RFC 9110 §5.6.7 formats; ``None`` if invalid.

    Accepts IMF-fixdate, RFC 850 and asctime, with surrounding OWS. Returns an aware UTC
    datetime. A leap second (``:60``) is read as ``:59``. For RFC 850's two-digit year, a
    year more than 50 years after ``now`` (default: the current time) means the previous
    century, as §5.6.7 requires. Never raises.
    """
    if not isinstance(value, str):
        return None
    value = value.strip(_OWS)
    try:
        if match := _IMF_FIXDATE.fullmatch(value):
            day, month, year, hour, minute, second = match.groups()
            return _make_date(int(year), month, day, hour, minute, second)
        if match := _RFC850_DATE.fullmatch(value):
            day, month, yy, hour, minute, second = match.groups()
            current = (now or datetime.now(UTC)).year
            year = current // 100 * 100 + int(yy)
            if year > current + 50:
                year -= 100
            return _make_date(year, month, day, hour, minute, second)
        if match := _ASCTIME_DATE.fullmatch(value):
            month, day, hour, minute, second, year = match.groups()
            return _make_date(int(year), month, day, hour, minute, second)
    except (ValueError, OverflowError):
        return None  # e.g. 31 Feb, hour 24, year 0000
    return None


def _make_date(year: int, month: str, day: str, hour: str, minute: str, second: str) -> datetime:
    return datetime(
        year,
        _MONTHS.index(month) + 1,
        int(day),
        int(hour),
        int(minute),
        min(int(second), 59),
        tzinfo=UTC,
    )


# --------------------------------------------------------------------------- Content-Disposition

# attr-char (RFC 8187 §3.2.1) beyond ALPHA / DIGIT, which urllib.parse.quote always keeps
# (it also always keeps "_.-~", all of which are attr-chars).
_ATTR_CHAR_EXTRA = "!#$&+-.^_`|~"
# Bidi controls let "exe.mp4" display as "mp4.exe"-like spoofs; drop them with controls.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_INLINE_TOP_LEVEL = ("video", "audio", "image")
# SVG is script-capable: rendered inline on our origin it would be stored XSS.
_NEVER_INLINE = frozenset({"image/svg+xml"})


def _sanitize_filename(filename: str) -> str:
    """Drop path separators, control, surrogate and bidi characters; empty -> ``file``."""
    kept = "".join(
        ch
        for ch in filename
        if ch not in "/\\"
        and ch not in _BIDI_CONTROLS
        and unicodedata.category(ch) not in ("Cc", "Cs")
    ).strip()
    if not kept.strip("."):
        return "file"  # "", ".", ".." are not names a browser should save
    return kept


def _ascii_fallback(name: str) -> str:
    """The plain ``filename`` value: printable ASCII, with every other character as ``_``.

    ``"`` and ``\\`` cannot be in a quoted-string unescaped, and ``%`` is replaced because
    Chromium percent-decodes ``filename`` (RFC 6266 Appendix D: avoid ``%`` + hex).
    """
    return "".join(ch if " " <= ch <= "~" and ch not in '"\\%' else "_" for ch in name)


def content_disposition(filename: str, *, attachment: bool) -> str:
    """A ``Content-Disposition`` value per RFC 6266 with an RFC 8187 ``filename*``.

    Shape: ``inline; filename="fallback"; filename*=UTF-8''pct-encoded`` (or ``attachment``).
    The ASCII ``filename`` comes first for old user agents; modern ones prefer
    ``filename*`` (RFC 6266 §4.3), which percent-encodes every UTF-8 byte except attr-char.
    The whole value is ASCII, so it is safe as a header whatever the name contains.
    """
    name = _sanitize_filename(filename)
    fallback = _ascii_fallback(name)
    encoded = quote(name.encode("utf-8"), safe=_ATTR_CHAR_EXTRA)
    kind = "attachment" if attachment else "inline"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def disposition_is_inline(mime_type: str) -> bool:
    """Whether browsers should display this type in place: video, audio, images and PDF.

    Parameters (``; charset=...``) and case are ignored (RFC 9110 §8.3.1). ``image/svg+xml``
    is excluded on purpose because an SVG opened inline runs script on the server's origin.
    """
    essence = mime_type.split(";", 1)[0].strip(_OWS).lower()
    if essence in _NEVER_INLINE:
        return False
    top, slash, sub = essence.partition("/")
    if not slash or not sub:
        return False
    return top in _INLINE_TOP_LEVEL or essence == "application/pdf"


# --------------------------------------------------------------------------- multipart

# bchars (RFC 2046 §5.1.1), 1-70 characters, not ending in space.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
# A field value must not smuggle CR/LF or other controls into the part headers.
_FIELD_VALUE = re.compile(r"[\x20-\x7e\t]*")


def multipart_layout(
    ranges: Iterable[ByteRange], size: int, content_type: str, boundary: str
) -> MultipartLayout:
    """Frame a ``multipart/byteranges`` 206 body the way nginx does (RFC 9110 §14.6).

    Each part is ``CRLF--boundary CRLF Content-Type: T CRLF Content-Range: bytes a-b/size
    CRLF CRLF`` followed by its data; the body ends with ``CRLF--boundary--CRLF``. The CRLF
    before the first delimiter is an empty preamble (RFC 2046 §5.1.1), so every part is
    framed identically, exactly as nginx sends it. Raises ``ValueError`` for an invalid
    boundary, a ``content_type`` with characters not allowed in a field value, or a range
    outside ``[0, size)`` -- all caller bugs, not request errors.
    """
    if not _BOUNDARY.fullmatch(boundary):
        raise ValueError(f"invalid multipart boundary {boundary!r}")
    if not _FIELD_VALUE.fullmatch(content_type):
        raise ValueError(f"content type not usable as a field value: {content_type!r}")
    parts: list[tuple[bytes, ByteRange]] = []
    total = 0
    for byte_range in ranges:
        if byte_range.end >= size:
            raise ValueError(f"range {byte_range.start}-{byte_range.end} outside {size} bytes")
        header = (
            f"\r\n--{boundary}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Range: {byte_range.content_range(size)}\r\n\r\n"
        ).encode("ascii")
        parts.append((header, byte_range))
        total += len(header) + byte_range.length
    if not parts:
        raise ValueError("multipart_layout needs at least one range")
    closing = f"\r\n--{boundary}--\r\n".encode("ascii")
    return MultipartLayout(
        boundary=boundary,
        parts=tuple(parts),
        closing=closing,
        content_length=total + len(closing),
    )
