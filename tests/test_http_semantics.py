"""Tests for routes.http_semantics: preconditions, Range, validators and header helpers.

Expected values come from RFC 9110 (§13 preconditions, §14 Range, §5.6.7 dates), RFC 6266 /
RFC 8187 (Content-Disposition) and nginx's range filter where the RFC leaves a choice.
"""

from __future__ import annotations

import email
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from routes.http_semantics import (
    ByteRange,
    Decision,
    RangeNotSatisfiable,
    Representation,
    content_disposition,
    disposition_is_inline,
    etag_for,
    evaluate,
    http_date,
    multipart_layout,
    parse_http_date,
    parse_range,
    unsatisfied_content_range,
)

ETAG = etag_for("AgADBAADm6ExAAJ")
OTHER = '"something-else"'
LM = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
LM_STR = http_date(LM)
BEFORE = http_date(LM - timedelta(hours=1))
AFTER = http_date(LM + timedelta(hours=1))
LM_RFC850 = "Wednesday, 01-May-24 12:00:00 GMT"
LM_ASCTIME = "Wed May  1 12:00:00 2024"
SIZE = 1000
REP = Representation(size=SIZE, etag=ETAG, last_modified=LM)
HUGE = "99999999999999999999999999"

IGNORE = "ignore"  # parse_range returned None: serve 200 with the full body
NOT_SATISFIABLE = "416"  # parse_range raised RangeNotSatisfiable


def _parse(value: str, size: int, max_ranges: int = 16) -> object:
    """Run parse_range and fold its three outcomes into one comparable value."""
    try:
        ranges = parse_range(value, size, max_ranges=max_ranges)
    except RangeNotSatisfiable:
        return NOT_SATISFIABLE
    if ranges is None:
        return IGNORE
    return [(r.start, r.end) for r in ranges]


# --------------------------------------------------------------------------- parse_range

RANGE_CASES = [
    # (Range value, size, max_ranges, expected)
    pytest.param("bytes=0-0", SIZE, 16, [(0, 0)], id="first-byte"),
    pytest.param("bytes=-1", SIZE, 16, [(999, 999)], id="suffix-last-byte"),
    pytest.param("bytes=999-999", SIZE, 16, [(999, 999)], id="last-byte-explicit"),
    pytest.param("bytes=999-", SIZE, 16, [(999, 999)], id="last-byte-open"),
    pytest.param("bytes=0-", SIZE, 16, [(0, 999)], id="open-from-zero-chromium-ffmpeg"),
    pytest.param("bytes=100-199", SIZE, 16, [(100, 199)], id="middle"),
    # RFC 9110 §14.1.2 examples for a 10000-byte representation.
    pytest.param("bytes=0-499", 10000, 16, [(0, 499)], id="rfc-first-500"),
    pytest.param("bytes=500-999", 10000, 16, [(500, 999)], id="rfc-second-500"),
    pytest.param("bytes=-500", 10000, 16, [(9500, 9999)], id="rfc-final-500-suffix"),
    pytest.param("bytes=9500-", 10000, 16, [(9500, 9999)], id="rfc-final-500-open"),
    pytest.param("bytes=0-0,-1", 10000, 16, [(0, 0), (9999, 9999)], id="rfc-first-and-last"),
    pytest.param(
        "bytes=500-600,601-999", 10000, 16, [(500, 600), (601, 999)], id="rfc-adjacent-kept"
    ),
    pytest.param(
        "bytes=500-700,601-999", 10000, 16, [(500, 700), (601, 999)], id="rfc-overlap-kept"
    ),
    # Unsatisfiable single ranges (§14.1.2): 416.
    pytest.param("bytes=-0", SIZE, 16, NOT_SATISFIABLE, id="suffix-zero"),
    pytest.param("bytes=1000-", SIZE, 16, NOT_SATISFIABLE, id="start-equals-size"),
    pytest.param("bytes=1000-1000", SIZE, 16, NOT_SATISFIABLE, id="start-equals-size-closed"),
    pytest.param("bytes=1001-2000", SIZE, 16, NOT_SATISFIABLE, id="start-beyond-size"),
    # Clamping.
    pytest.param("bytes=0-999", SIZE, 16, [(0, 999)], id="end-is-last-byte"),
    pytest.param("bytes=0-1000", SIZE, 16, [(0, 999)], id="end-equals-size-clamped"),
    pytest.param("bytes=500-5000", SIZE, 16, [(500, 999)], id="end-beyond-size-clamped"),
    pytest.param("bytes=-1000", SIZE, 16, [(0, 999)], id="suffix-equals-size"),
    pytest.param("bytes=-2000", SIZE, 16, [(0, 999)], id="suffix-beyond-size-whole-file"),
    pytest.param("bytes=-5", 1, 16, [(0, 0)], id="one-byte-file-suffix"),
    pytest.param("bytes=0-0", 1, 16, [(0, 0)], id="one-byte-file"),
    # Unit is case-insensitive (§14.1); OWS tolerated around = , - (nginx-like).
    pytest.param("BYTES=0-4", SIZE, 16, [(0, 4)], id="unit-upper"),
    pytest.param("Bytes=0-4", SIZE, 16, [(0, 4)], id="unit-mixed-case"),
    pytest.param("bytes = 0 - 4", SIZE, 16, [(0, 4)], id="ows-around-eq-and-dash"),
    pytest.param("bytes=\t0-4\t", SIZE, 16, [(0, 4)], id="tabs"),
    pytest.param("bytes=0-4 , 6-9", SIZE, 16, [(0, 4), (6, 9)], id="ows-around-comma"),
    pytest.param("bytes= - 5", SIZE, 16, [(995, 999)], id="ows-in-suffix"),
    pytest.param("bytes=0-1,,3-4", SIZE, 16, [(0, 1), (3, 4)], id="empty-list-element"),
    pytest.param("  bytes=0-4  ", SIZE, 16, [(0, 4)], id="surrounding-space"),
    pytest.param("bytes=0001-0002", SIZE, 16, [(1, 2)], id="leading-zeros"),
    # Unknown unit or no ranges-specifier at all: MUST ignore (§14.2).
    pytest.param("items=0-4", SIZE, 16, IGNORE, id="unknown-unit"),
    pytest.param("bytesx=0-4", SIZE, 16, IGNORE, id="unit-prefix-only"),
    pytest.param("bytes0-4", SIZE, 16, IGNORE, id="no-equals"),
    pytest.param("", SIZE, 16, IGNORE, id="empty-value"),
    # Syntax errors: nginx answers 416.
    pytest.param("bytes=abc", SIZE, 16, NOT_SATISFIABLE, id="garbage"),
    pytest.param("bytes=5-2", SIZE, 16, NOT_SATISFIABLE, id="last-before-first"),
    pytest.param("bytes=", SIZE, 16, NOT_SATISFIABLE, id="empty-set"),
    pytest.param("bytes=,", SIZE, 16, NOT_SATISFIABLE, id="only-empty-elements"),
    pytest.param("bytes=--1", SIZE, 16, NOT_SATISFIABLE, id="double-dash"),
    pytest.param("bytes=-", SIZE, 16, NOT_SATISFIABLE, id="bare-dash"),
    pytest.param("bytes=1-2-3", SIZE, 16, NOT_SATISFIABLE, id="two-dashes"),
    pytest.param("bytes=+1-2", SIZE, 16, NOT_SATISFIABLE, id="plus-sign"),
    pytest.param("bytes=1_0-20", SIZE, 16, NOT_SATISFIABLE, id="underscore-numeral"),
    pytest.param("bytes=0x10-", SIZE, 16, NOT_SATISFIABLE, id="hex"),
    pytest.param("bytes=1 2-3", SIZE, 16, NOT_SATISFIABLE, id="space-inside-number"),
    pytest.param("bytes=\u0663-4", SIZE, 16, NOT_SATISFIABLE, id="non-ascii-digit"),
    pytest.param("bytes=1.5-2", SIZE, 16, NOT_SATISFIABLE, id="decimal"),
    pytest.param("bytes=0-1,abc", SIZE, 16, NOT_SATISFIABLE, id="garbage-after-valid"),
    # Large numerals (§14.1.1): never overflow; saturate.
    pytest.param(f"bytes={HUGE}-", SIZE, 16, NOT_SATISFIABLE, id="huge-start"),
    pytest.param(f"bytes={HUGE}-{HUGE}", SIZE, 16, NOT_SATISFIABLE, id="huge-both"),
    pytest.param(f"bytes=0-{HUGE}", SIZE, 16, [(0, 999)], id="huge-end-clamped"),
    pytest.param(f"bytes=-{HUGE}", SIZE, 16, [(0, 999)], id="huge-suffix-whole-file"),
    pytest.param("bytes=0-" + "9" * 5000, SIZE, 16, [(0, 999)], id="end-over-int-str-limit"),
    pytest.param("bytes=" + "9" * 5000 + "-", SIZE, 16, NOT_SATISFIABLE, id="start-over-limit"),
    pytest.param("bytes=" + "0" * 5000 + "7-8", SIZE, 16, [(7, 8)], id="many-leading-zeros"),
    # Multi-range sets: unsatisfiable members dropped; none left is 416.
    pytest.param("bytes=0-1,5-6", SIZE, 16, [(0, 1), (5, 6)], id="multi-satisfiable"),
    pytest.param("bytes=5-6,0-1", SIZE, 16, [(5, 6), (0, 1)], id="multi-request-order"),
    pytest.param("bytes=0-1,2000-3000", SIZE, 16, [(0, 1)], id="mixed-one-left"),
    pytest.param("bytes=-0,10-19", SIZE, 16, [(10, 19)], id="mixed-suffix-zero-dropped"),
    pytest.param("bytes=5-2,0-1", SIZE, 16, [(0, 1)], id="mixed-reversed-skipped-nginx"),
    pytest.param("bytes=2000-,-0", SIZE, 16, NOT_SATISFIABLE, id="multi-none-satisfiable"),
    # Abuse guard (nginx): sum of lengths > size, or more than max_ranges -> ignore.
    pytest.param("bytes=0-999,0-999", SIZE, 16, IGNORE, id="abusive-duplicate-whole"),
    pytest.param("bytes=0-,0-", SIZE, 16, IGNORE, id="abusive-open-twice"),
    pytest.param("bytes=0-600,400-999", SIZE, 16, IGNORE, id="abusive-overlap-over-size"),
    pytest.param("bytes=0-499,500-999", SIZE, 16, [(0, 499), (500, 999)], id="sum-equals-size"),
    pytest.param(
        "bytes=" + ",".join(f"{i}-{i}" for i in range(17)), SIZE, 16, IGNORE, id="over-max"
    ),
    pytest.param(
        "bytes=" + ",".join(f"{i}-{i}" for i in range(16)),
        SIZE,
        16,
        [(i, i) for i in range(16)],
        id="exactly-max",
    ),
    pytest.param("bytes=0-1,3-4", SIZE, 1, IGNORE, id="max-ranges-1"),
    pytest.param("bytes=0-1", SIZE, 0, IGNORE, id="max-ranges-0-disables"),
    # Zero-length file: any Range is ignored (nginx declines).
    pytest.param("bytes=0-", 0, 16, IGNORE, id="empty-file-open"),
    pytest.param("bytes=0-0", 0, 16, IGNORE, id="empty-file-first-byte"),
    pytest.param("bytes=-1", 0, 16, IGNORE, id="empty-file-suffix"),
    pytest.param("bytes=-0", 0, 16, IGNORE, id="empty-file-suffix-zero"),
    pytest.param("bytes=abc", 0, 16, IGNORE, id="empty-file-garbage"),
]


@pytest.mark.parametrize(("value", "size", "max_ranges", "expected"), RANGE_CASES)
def test_parse_range(value: str, size: int, max_ranges: int, expected: object) -> None:
    """parse_range resolves each Range value to ranges, ignore (None) or 416 (raise)."""
    assert _parse(value, size, max_ranges) == expected


def test_parse_range_never_returns_empty_tuple() -> None:
    """The 416 outcome is the exception, never an empty tuple the caller could mistake."""
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=-0", 10)


def test_parse_range_rejects_negative_size() -> None:
    """A negative size is a caller bug and raises ValueError."""
    with pytest.raises(ValueError, match="size"):
        parse_range("bytes=0-1", -1)


# --------------------------------------------------------------------------- evaluate

EVALUATE_CASES = [
    # (method, headers, expected Decision)
    pytest.param("GET", {}, Decision(200), id="plain-get"),
    pytest.param("HEAD", {}, Decision(200), id="plain-head"),
    # If-Match (§13.1.1): strong comparison, * matches, lists with OWS.
    pytest.param("GET", {"If-Match": ETAG}, Decision(200), id="if-match-same"),
    pytest.param("GET", {"If-Match": OTHER}, Decision(412), id="if-match-other"),
    pytest.param("GET", {"If-Match": "*"}, Decision(200), id="if-match-star"),
    pytest.param("GET", {"If-Match": f'"a" ,  {ETAG}'}, Decision(200), id="if-match-list"),
    pytest.param("GET", {"If-Match": f'"a",{OTHER}'}, Decision(412), id="if-match-list-miss"),
    pytest.param("GET", {"If-Match": f"W/{ETAG}"}, Decision(412), id="if-match-weak-never"),
    pytest.param("GET", {"If-Match": "garbage"}, Decision(412), id="if-match-garbage"),
    pytest.param("GET", {"If-Match": ""}, Decision(412), id="if-match-empty"),
    pytest.param("HEAD", {"If-Match": OTHER}, Decision(412), id="if-match-head"),
    # If-Unmodified-Since (§13.1.4).
    pytest.param("GET", {"If-Unmodified-Since": LM_STR}, Decision(200), id="ius-equal"),
    pytest.param("GET", {"If-Unmodified-Since": AFTER}, Decision(200), id="ius-after"),
    pytest.param("GET", {"If-Unmodified-Since": BEFORE}, Decision(412), id="ius-before"),
    pytest.param("GET", {"If-Unmodified-Since": "yesterday"}, Decision(200), id="ius-invalid"),
    pytest.param(
        "GET", {"If-Unmodified-Since": f"{BEFORE}, {BEFORE}"}, Decision(200), id="ius-list"
    ),
    pytest.param(
        "GET",
        {"If-Match": ETAG, "If-Unmodified-Since": BEFORE},
        Decision(200),
        id="ius-ignored-with-if-match",
    ),
    pytest.param(
        "GET",
        {"If-Match": OTHER, "If-Unmodified-Since": AFTER},
        Decision(412),
        id="if-match-decides-not-ius",
    ),
    # If-None-Match (§13.1.2): weak comparison, 304 for GET/HEAD, 412 otherwise.
    pytest.param("GET", {"If-None-Match": ETAG}, Decision(304), id="inm-same"),
    pytest.param("HEAD", {"If-None-Match": ETAG}, Decision(304), id="inm-same-head"),
    pytest.param("GET", {"If-None-Match": f"W/{ETAG}"}, Decision(304), id="inm-weak-matches"),
    pytest.param("GET", {"If-None-Match": "*"}, Decision(304), id="inm-star"),
    pytest.param("GET", {"If-None-Match": OTHER}, Decision(200), id="inm-other"),
    pytest.param("GET", {"If-None-Match": f"{OTHER}, {ETAG}"}, Decision(304), id="inm-list"),
    pytest.param("GET", {"If-None-Match": "garbage"}, Decision(200), id="inm-garbage"),
    pytest.param("POST", {"If-None-Match": ETAG}, Decision(412), id="inm-unsafe-method"),
    # If-Modified-Since (§13.1.3): GET/HEAD only, only without If-None-Match.
    pytest.param("GET", {"If-Modified-Since": LM_STR}, Decision(304), id="ims-equal"),
    pytest.param("GET", {"If-Modified-Since": AFTER}, Decision(304), id="ims-after"),
    pytest.param("HEAD", {"If-Modified-Since": LM_STR}, Decision(304), id="ims-head"),
    pytest.param("GET", {"If-Modified-Since": BEFORE}, Decision(200), id="ims-before"),
    pytest.param("GET", {"If-Modified-Since": "garbage"}, Decision(200), id="ims-invalid"),
    pytest.param("GET", {"If-Modified-Since": LM_RFC850}, Decision(304), id="ims-rfc850"),
    pytest.param("GET", {"If-Modified-Since": LM_ASCTIME}, Decision(304), id="ims-asctime"),
    pytest.param("POST", {"If-Modified-Since": LM_STR}, Decision(200), id="ims-unsafe-ignored"),
    pytest.param(
        "GET",
        {"If-None-Match": OTHER, "If-Modified-Since": LM_STR},
        Decision(200),
        id="ims-ignored-with-inm",
    ),
    pytest.param(
        "GET",
        {"If-None-Match": ETAG, "If-Modified-Since": BEFORE},
        Decision(304),
        id="inm-decides-not-ims",
    ),
    # Precedence (§13.2.2): 412 checks before 304 checks.
    pytest.param(
        "GET",
        {"If-Match": OTHER, "If-None-Match": ETAG},
        Decision(412),
        id="if-match-before-inm",
    ),
    pytest.param(
        "GET",
        {"If-Unmodified-Since": BEFORE, "If-None-Match": ETAG},
        Decision(412),
        id="ius-before-inm",
    ),
    pytest.param(
        "GET",
        {"If-Unmodified-Since": BEFORE, "If-Modified-Since": LM_STR},
        Decision(412),
        id="ius-before-ims",
    ),
    pytest.param(
        "GET",
        {"If-Match": ETAG, "If-None-Match": ETAG},
        Decision(304),
        id="if-match-pass-then-inm",
    ),
    pytest.param(
        "GET",
        {"If-Unmodified-Since": AFTER, "If-Modified-Since": AFTER},
        Decision(304),
        id="ius-pass-then-ims",
    ),
    # Range only after preconditions, only when the answer would be 200 (§14.2).
    pytest.param(
        "GET", {"If-None-Match": ETAG, "Range": "bytes=0-4"}, Decision(304), id="range-after-304"
    ),
    pytest.param(
        "GET", {"If-Modified-Since": LM_STR, "Range": "bytes=0-4"}, Decision(304), id="ims-range"
    ),
    pytest.param(
        "GET", {"If-Match": OTHER, "Range": "bytes=0-4"}, Decision(412), id="range-after-412"
    ),
    pytest.param(
        "GET",
        {"If-Match": ETAG, "Range": "bytes=0-4"},
        Decision(206, (ByteRange(0, 4),)),
        id="if-match-pass-range",
    ),
    pytest.param(
        "GET",
        {"If-None-Match": OTHER, "Range": "bytes=0-4"},
        Decision(206, (ByteRange(0, 4),)),
        id="inm-pass-range",
    ),
    # Range basics through evaluate; HEAD and other methods ignore Range.
    pytest.param("GET", {"Range": "bytes=0-4"}, Decision(206, (ByteRange(0, 4),)), id="range"),
    pytest.param(
        "GET",
        {"Range": "bytes=0-1,5-6"},
        Decision(206, (ByteRange(0, 1), ByteRange(5, 6))),
        id="range-multi",
    ),
    pytest.param("HEAD", {"Range": "bytes=0-4"}, Decision(200), id="head-ignores-range"),
    pytest.param("HEAD", {"Range": "bytes=5000-"}, Decision(200), id="head-ignores-416"),
    pytest.param("POST", {"Range": "bytes=0-4"}, Decision(200), id="post-ignores-range"),
    pytest.param("GET", {"Range": "bytes=5000-"}, Decision(416), id="range-416"),
    pytest.param("GET", {"Range": "bytes=abc"}, Decision(416), id="range-garbage-416"),
    pytest.param("GET", {"Range": "items=0-4"}, Decision(200), id="range-unknown-unit"),
    pytest.param("GET", {"Range": "bytes=0-,0-"}, Decision(200), id="range-abusive"),
    # If-Range (§13.1.5): strong ETag, exact date, anything else false -> 200 (never 412).
    pytest.param(
        "GET",
        {"If-Range": ETAG, "Range": "bytes=0-4"},
        Decision(206, (ByteRange(0, 4),)),
        id="if-range-etag-match",
    ),
    pytest.param(
        "GET", {"If-Range": OTHER, "Range": "bytes=0-4"}, Decision(200), id="if-range-etag-miss"
    ),
    pytest.param(
        "GET",
        {"If-Range": f"W/{ETAG}", "Range": "bytes=0-4"},
        Decision(200),
        id="if-range-weak-never",
    ),
    pytest.param(
        "GET",
        {"If-Range": f"{ETAG}, {ETAG}", "Range": "bytes=0-4"},
        Decision(200),
        id="if-range-list-not-a-tag",
    ),
    pytest.param(
        "GET",
        {"If-Range": LM_STR, "Range": "bytes=0-4"},
        Decision(206, (ByteRange(0, 4),)),
        id="if-range-date-equal",
    ),
    pytest.param(
        "GET",
        {"If-Range": LM_RFC850, "Range": "bytes=0-4"},
        Decision(206, (ByteRange(0, 4),)),
        id="if-range-date-equal-rfc850",
    ),
    pytest.param(
        "GET", {"If-Range": BEFORE, "Range": "bytes=0-4"}, Decision(200), id="if-range-date-before"
    ),
    pytest.param(
        "GET",
        {"If-Range": AFTER, "Range": "bytes=0-4"},
        Decision(200),
        id="if-range-date-after-not-le",
    ),
    pytest.param(
        "GET", {"If-Range": "wrong", "Range": "bytes=0-4"}, Decision(200), id="if-range-garbage"
    ),
    pytest.param("GET", {"If-Range": "", "Range": "bytes=0-4"}, Decision(200), id="if-range-empty"),
    pytest.param("GET", {"If-Range": OTHER}, Decision(200), id="if-range-without-range"),
    pytest.param("GET", {"If-Range": ETAG}, Decision(200), id="if-range-match-without-range"),
    pytest.param(
        "GET",
        {"If-Range": OTHER, "Range": "bytes=5000-"},
        Decision(200),
        id="if-range-false-beats-416",
    ),
    pytest.param(
        "GET",
        {"If-Range": ETAG, "Range": "bytes=5000-"},
        Decision(416),
        id="if-range-true-then-416",
    ),
    pytest.param(
        "HEAD", {"If-Range": ETAG, "Range": "bytes=0-4"}, Decision(200), id="if-range-head"
    ),
    # Header names are case-insensitive (§5.1).
    pytest.param(
        "GET",
        {"RANGE": "bytes=0-4", "iF-rAnGe": ETAG},
        Decision(206, (ByteRange(0, 4),)),
        id="header-name-casing",
    ),
    pytest.param("GET", {"if-none-match": ETAG}, Decision(304), id="header-lowercase"),
    # Repeated list fields combine (§5.3).
    pytest.param(
        "GET",
        {"If-None-Match": OTHER, "if-none-match": ETAG},
        Decision(304),
        id="repeated-inm-combined",
    ),
    pytest.param(
        "GET",
        {"Range": "bytes=0-4", "range": "bytes=5-9"},
        Decision(416),
        id="repeated-range-invalid",
    ),
]


@pytest.mark.parametrize(("method", "headers", "expected"), EVALUATE_CASES)
def test_evaluate(method: str, headers: Mapping[str, str], expected: Decision) -> None:
    """evaluate applies RFC 9110 §13.2.2 precedence, then If-Range, then Range."""
    assert evaluate(method, headers, REP) == expected


def test_evaluate_accepts_cimultidictproxy_with_repeats() -> None:
    """aiohttp's header proxy works, and its repeated If-None-Match lines are combined."""
    raw = CIMultiDict([("If-None-Match", OTHER), ("IF-NONE-MATCH", ETAG)])
    assert evaluate("GET", CIMultiDictProxy(raw), REP) == Decision(304)


def test_evaluate_empty_file_ignores_range() -> None:
    """A zero-length file answers any Range with 200, like nginx."""
    empty = Representation(size=0, etag=ETAG, last_modified=LM)
    for value in ("bytes=0-", "bytes=-1", "bytes=-0", "bytes=abc"):
        assert evaluate("GET", {"Range": value}, empty) == Decision(200)


def test_evaluate_passes_max_ranges() -> None:
    """The max_ranges guard given to evaluate reaches the Range parser."""
    headers = {"Range": "bytes=0-1,3-4"}
    assert evaluate("GET", headers, REP, max_ranges=1) == Decision(200)
    assert evaluate("GET", headers, REP, max_ranges=2).multipart


def test_evaluate_sub_second_last_modified() -> None:
    """Sub-second Last-Modified compares at whole seconds, as HTTP-dates carry."""
    rep = Representation(size=SIZE, etag=ETAG, last_modified=LM.replace(microsecond=500_000))
    assert evaluate("GET", {"If-Modified-Since": LM_STR}, rep) == Decision(304)
    assert evaluate("GET", {"If-Unmodified-Since": LM_STR}, rep) == Decision(200)
    assert evaluate("GET", {"If-Range": LM_STR, "Range": "bytes=0-0"}, rep).status == 206


def test_evaluate_with_non_utc_last_modified() -> None:
    """An aware Last-Modified in another zone compares by instant."""
    plus2 = timezone(timedelta(hours=2))
    rep = Representation(size=SIZE, etag=ETAG, last_modified=LM.astimezone(plus2))
    assert evaluate("GET", {"If-Range": LM_STR, "Range": "bytes=0-0"}, rep).status == 206


# --------------------------------------------------------------------------- value types

DECISION_CASES = [
    pytest.param(Decision(200), False, id="200"),
    pytest.param(Decision(206, (ByteRange(0, 1),)), False, id="single-part"),
    pytest.param(Decision(206, (ByteRange(0, 1), ByteRange(3, 4))), True, id="multipart"),
]


@pytest.mark.parametrize(("decision", "multipart"), DECISION_CASES)
def test_decision_multipart(decision: Decision, multipart: bool) -> None:
    """Only two or more ranges make a multipart response (§15.3.7)."""
    assert decision.multipart is multipart


BYTE_RANGE_CASES = [
    pytest.param(0, 99, 1000, 100, "bytes 0-99/1000", id="first-100"),
    pytest.param(0, 0, 1, 1, "bytes 0-0/1", id="single-byte"),
    pytest.param(999, 999, 1000, 1, "bytes 999-999/1000", id="last-byte"),
]


@pytest.mark.parametrize(("start", "end", "size", "length", "header"), BYTE_RANGE_CASES)
def test_byte_range(start: int, end: int, size: int, length: int, header: str) -> None:
    """ByteRange is inclusive and formats Content-Range as in RFC 9110 §14.4."""
    byte_range = ByteRange(start, end)
    assert byte_range.length == length
    assert byte_range.content_range(size) == header


@pytest.mark.parametrize(("start", "end"), [(-1, 5), (5, 4)], ids=["negative", "reversed"])
def test_byte_range_rejects_invalid(start: int, end: int) -> None:
    """An empty or negative range cannot be built, so no invalid Content-Range is sent."""
    with pytest.raises(ValueError, match="invalid byte range"):
        ByteRange(start, end)


def test_unsatisfied_content_range() -> None:
    """A 416 carries Content-Range: bytes */size (§15.5.17)."""
    assert unsatisfied_content_range(1000) == "bytes */1000"


REPRESENTATION_ERRORS = [
    pytest.param({"size": -1}, "size", id="negative-size"),
    pytest.param({"etag": "abc"}, "etag", id="unquoted-etag"),
    pytest.param({"etag": 'W/"abc"'}, "etag", id="weak-etag"),
    pytest.param({"etag": '"a"b"'}, "etag", id="quote-inside"),
    pytest.param({"last_modified": datetime(2024, 1, 1)}, "aware", id="naive-date"),
]


@pytest.mark.parametrize(("override", "message"), REPRESENTATION_ERRORS)
def test_representation_validates(override: dict[str, object], message: str) -> None:
    """Representation rejects values that would break validators or Content-Length."""
    fields: dict[str, object] = {"size": 1, "etag": ETAG, "last_modified": LM} | override
    with pytest.raises(ValueError, match=message):
        Representation(**fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- etag / dates

ETAG_IDS = [
    pytest.param("AgADBAADm6ExAAJ", id="telegram-like"),
    pytest.param("", id="empty"),
    pytest.param('a"b\\c, W/"', id="quotes-and-commas"),
    pytest.param("привет\ud800", id="unicode-and-surrogate"),
]


@pytest.mark.parametrize("unique_id", ETAG_IDS)
def test_etag_for_is_strong_and_safe(unique_id: str) -> None:
    """etag_for yields a quoted strong tag of base64url characters only, deterministically."""
    tag = etag_for(unique_id)
    assert re.fullmatch(r'"[A-Za-z0-9_-]{24}"', tag)
    assert etag_for(unique_id) == tag
    Representation(size=0, etag=tag, last_modified=LM)


def test_etag_for_distinguishes_ids() -> None:
    """Different Telegram files get different ETags."""
    assert etag_for("AgADBAADm6ExAAJ") != etag_for("AgADBAADm6ExAAK")


HTTP_DATE_CASES = [
    pytest.param(
        datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC),
        "Sun, 06 Nov 1994 08:49:37 GMT",
        id="rfc-example",
    ),
    pytest.param(
        datetime(1994, 11, 6, 10, 49, 37, 999_999, tzinfo=timezone(timedelta(hours=2))),
        "Sun, 06 Nov 1994 08:49:37 GMT",
        id="other-zone-and-microseconds",
    ),
    pytest.param(datetime(9, 1, 2, 3, 4, 5, tzinfo=UTC), "Fri, 02 Jan 0009 03:04:05 GMT", id="y9"),
]


@pytest.mark.parametrize(("dt", "text"), HTTP_DATE_CASES)
def test_http_date(dt: datetime, text: str) -> None:
    """http_date produces IMF-fixdate in GMT with English names (§5.6.7)."""
    assert http_date(dt) == text


def test_http_date_rejects_naive() -> None:
    """A naive datetime is ambiguous and raises ValueError."""
    with pytest.raises(ValueError, match="timezone-aware"):
        http_date(datetime(2024, 1, 1))


RFC_EXAMPLE = datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC)
NOW_2026 = datetime(2026, 11, 21, tzinfo=UTC)

PARSE_DATE_CASES = [
    pytest.param("Sun, 06 Nov 1994 08:49:37 GMT", RFC_EXAMPLE, id="imf-fixdate"),
    pytest.param("Sunday, 06-Nov-94 08:49:37 GMT", RFC_EXAMPLE, id="rfc850"),
    pytest.param("Sun Nov  6 08:49:37 1994", RFC_EXAMPLE, id="asctime"),
    pytest.param("Sun Nov 16 08:49:37 1994", RFC_EXAMPLE.replace(day=16), id="asctime-2digit"),
    pytest.param(" \tSun, 06 Nov 1994 08:49:37 GMT ", RFC_EXAMPLE, id="surrounding-ows"),
    pytest.param(
        "Sat, 31 Dec 2016 23:59:60 GMT",
        datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC),
        id="leap-second",
    ),
    pytest.param(
        "Monday, 01-Jan-76 00:00:00 GMT",
        datetime(2076, 1, 1, tzinfo=UTC),
        id="rfc850-within-50-years",
    ),
    pytest.param(
        "Saturday, 01-Jan-77 00:00:00 GMT",
        datetime(1977, 1, 1, tzinfo=UTC),
        id="rfc850-past-century",
    ),
    pytest.param("", None, id="empty"),
    pytest.param("yesterday", None, id="garbage"),
    pytest.param("Sun, 06 Nov 1994 08:49:37 UTC", None, id="not-gmt"),
    pytest.param("Sun, 06 Nov 1994 08:49:37", None, id="no-zone"),
    pytest.param("sun, 06 nov 1994 08:49:37 GMT", None, id="lowercase-names"),
    pytest.param("Sun, 6 Nov 1994 08:49:37 GMT", None, id="one-digit-day"),
    pytest.param("Sun, 31 Feb 1994 08:49:37 GMT", None, id="no-such-day"),
    pytest.param("Sun, 06 Nov 1994 24:00:00 GMT", None, id="hour-24"),
    pytest.param("Sun, 06 Nov 0000 08:49:37 GMT", None, id="year-zero"),
    pytest.param("Sun, 06 Foo 1994 08:49:37 GMT", None, id="bad-month"),
    pytest.param("Sun, \u06606 Nov 1994 08:49:37 GMT", None, id="non-ascii-digit"),
    pytest.param(
        "Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT", None, id="list-of-dates"
    ),
    pytest.param("1994-11-06T08:49:37Z", None, id="iso-8601"),
    pytest.param("Sun, 06 Nov 1994 08:49:37 GMT" + "x" * 10000, None, id="long-junk"),
]


@pytest.mark.parametrize(("value", "expected"), PARSE_DATE_CASES)
def test_parse_http_date(value: str, expected: datetime | None) -> None:
    """parse_http_date reads all three §5.6.7 formats and returns None for anything else."""
    assert parse_http_date(value, now=NOW_2026) == expected


def test_parse_http_date_non_string() -> None:
    """A non-string value gives None instead of raising."""
    assert parse_http_date(None) is None  # type: ignore[arg-type]


# --------------------------------------------------------------------------- Content-Disposition

DISPOSITION_CASES = [
    pytest.param(
        "video.mp4", False, "inline; filename=\"video.mp4\"; filename*=UTF-8''video.mp4", id="plain"
    ),
    pytest.param(
        "€ rates.txt",
        True,
        "attachment; filename=\"_ rates.txt\"; filename*=UTF-8''%E2%82%AC%20rates.txt",
        id="euro",
    ),
    pytest.param(
        "привет 世界.mp4",
        True,
        'attachment; filename="______ __.mp4"; '
        "filename*=UTF-8''%D0%BF%D1%80%D0%B8%D0%B2%D0%B5%D1%82%20%E4%B8%96%E7%95%8C.mp4",
        id="cyrillic-cjk",
    ),
    pytest.param(
        "😀.png", False, "inline; filename=\"_.png\"; filename*=UTF-8''%F0%9F%98%80.png", id="emoji"
    ),
    pytest.param(
        'a"b;c.txt',
        True,
        "attachment; filename=\"a_b;c.txt\"; filename*=UTF-8''a%22b%3Bc.txt",
        id="quote-and-semicolon",
    ),
    pytest.param(
        "100% done.txt",
        True,
        "attachment; filename=\"100_ done.txt\"; filename*=UTF-8''100%25%20done.txt",
        id="percent-not-in-fallback",
    ),
    pytest.param(
        "it's (1)*.mkv",
        True,
        "attachment; filename=\"it's (1)*.mkv\"; filename*=UTF-8''it%27s%20%281%29%2A.mkv",
        id="non-attr-chars-encoded",
    ),
    pytest.param(
        "a!#$&+-.^_`|~b",
        True,
        "attachment; filename=\"a!#$&+-.^_`|~b\"; filename*=UTF-8''a!#$&+-.^_`|~b",
        id="attr-chars-kept",
    ),
    pytest.param(
        "../../etc/passwd",
        True,
        "attachment; filename=\"....etcpasswd\"; filename*=UTF-8''....etcpasswd",
        id="path-separators",
    ),
    pytest.param(
        "a\\b.txt", True, "attachment; filename=\"ab.txt\"; filename*=UTF-8''ab.txt", id="backslash"
    ),
    pytest.param(
        "evil\r\nSet-Cookie: x=1\x00.txt",
        True,
        'attachment; filename="evilSet-Cookie: x=1.txt"; '
        "filename*=UTF-8''evilSet-Cookie%3A%20x%3D1.txt",
        id="control-chars",
    ),
    pytest.param(
        "\u202egpj.exe",
        True,
        "attachment; filename=\"gpj.exe\"; filename*=UTF-8''gpj.exe",
        id="bidi-override",
    ),
    pytest.param(
        "a\ud800b.txt", True, "attachment; filename=\"ab.txt\"; filename*=UTF-8''ab.txt", id="lone"
    ),
    pytest.param("", True, "attachment; filename=\"file\"; filename*=UTF-8''file", id="empty"),
    pytest.param("  ", True, "attachment; filename=\"file\"; filename*=UTF-8''file", id="blank"),
    pytest.param("..", True, "attachment; filename=\"file\"; filename*=UTF-8''file", id="dots"),
    pytest.param("/", True, "attachment; filename=\"file\"; filename*=UTF-8''file", id="slash"),
]


@pytest.mark.parametrize(("filename", "attachment", "expected"), DISPOSITION_CASES)
def test_content_disposition(filename: str, attachment: bool, expected: str) -> None:
    """content_disposition emits RFC 6266 with an ASCII fallback and RFC 8187 filename*."""
    assert content_disposition(filename, attachment=attachment) == expected


INLINE_CASES = [
    pytest.param("video/mp4", True, id="video"),
    pytest.param("video/x-matroska", True, id="mkv"),
    pytest.param("audio/mpeg", True, id="audio"),
    pytest.param("image/png", True, id="image"),
    pytest.param("application/pdf", True, id="pdf"),
    pytest.param("Video/MP4; codecs=avc1", True, id="case-and-params"),
    pytest.param(" audio/ogg ", True, id="surrounding-space"),
    pytest.param("image/svg+xml", False, id="svg-script-capable"),
    pytest.param("text/html", False, id="html"),
    pytest.param("text/plain", False, id="text"),
    pytest.param("application/octet-stream", False, id="octet-stream"),
    pytest.param("application/x-pdf", False, id="not-pdf"),
    pytest.param("application/pdfx", False, id="pdf-prefix"),
    pytest.param("video", False, id="no-subtype"),
    pytest.param("video/", False, id="empty-subtype"),
    pytest.param("", False, id="empty"),
]


@pytest.mark.parametrize(("mime_type", "inline"), INLINE_CASES)
def test_disposition_is_inline(mime_type: str, inline: bool) -> None:
    """Media and PDF display inline; everything else, and script-capable SVG, downloads."""
    assert disposition_is_inline(mime_type) is inline


# --------------------------------------------------------------------------- multipart


def _body(layout_parts: tuple[tuple[bytes, ByteRange], ...], closing: bytes, data: bytes) -> bytes:
    """Assemble a multipart body from a layout and the file's bytes."""
    out = b"".join(header + data[r.start : r.end + 1] for header, r in layout_parts)
    return out + closing


def test_multipart_layout_exact_bytes() -> None:
    """The framing matches nginx byte for byte and Content-Length is exact."""
    data = b"0123456789"
    layout = multipart_layout([ByteRange(0, 0), ByteRange(8, 9)], 10, "text/plain", "B0UND")
    body = _body(layout.parts, layout.closing, data)
    assert body == (
        b"\r\n--B0UND\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-0/10\r\n\r\n0"
        b"\r\n--B0UND\r\nContent-Type: text/plain\r\nContent-Range: bytes 8-9/10\r\n\r\n89"
        b"\r\n--B0UND--\r\n"
    )
    assert layout.content_length == len(body)
    assert layout.content_type == "multipart/byteranges; boundary=B0UND"


def test_multipart_layout_parses_as_mime() -> None:
    """A standard MIME parser recovers each requested part, headers and data, from the body."""
    data = bytes(range(256)) * 4
    ranges = [ByteRange(10, 19), ByteRange(1000, 1023), ByteRange(0, 0)]
    layout = multipart_layout(ranges, len(data), "video/mp4", "3d6b6a416f9b5")
    body = _body(layout.parts, layout.closing, data)
    message = email.message_from_bytes(
        f"Content-Type: {layout.content_type}\r\n\r\n".encode() + body
    )
    parts = message.get_payload()
    assert isinstance(parts, list)
    assert [p["Content-Range"] for p in parts] == [r.content_range(len(data)) for r in ranges]
    assert all(p["Content-Type"] == "video/mp4" for p in parts)
    assert [p.get_payload(decode=True) for p in parts] == [
        data[r.start : r.end + 1] for r in ranges
    ]


MULTIPART_ERRORS = [
    pytest.param([ByteRange(0, 1)], "text/plain", "", id="empty-boundary"),
    pytest.param([ByteRange(0, 1)], "text/plain", "x" * 71, id="long-boundary"),
    pytest.param([ByteRange(0, 1)], "text/plain", "ends-in-space ", id="boundary-space-end"),
    pytest.param([ByteRange(0, 1)], "text/plain", "a\r\nb", id="boundary-crlf"),
    pytest.param([ByteRange(0, 1)], "text/plain\r\nX: y", "b", id="content-type-crlf"),
    pytest.param([ByteRange(0, 1)], "vidéo/mp4", "b", id="content-type-non-ascii"),
    pytest.param([ByteRange(5, 10)], "text/plain", "b", id="range-past-end"),
    pytest.param([], "text/plain", "b", id="no-ranges"),
]


@pytest.mark.parametrize(("ranges", "content_type", "boundary"), MULTIPART_ERRORS)
def test_multipart_layout_rejects(
    ranges: list[ByteRange], content_type: str, boundary: str
) -> None:
    """Caller bugs that would corrupt the framing or headers raise ValueError."""
    with pytest.raises(ValueError, match=r"."):
        multipart_layout(ranges, 10, content_type, boundary)


# --------------------------------------------------------------------------- properties

positions = st.one_of(st.integers(0, 300), st.integers(0, 10**30))


@st.composite
def single_range_specs(draw: st.DrawFn) -> tuple[str, int | None, int | None, str]:
    """A single byte-range-spec: (header value, a, b, form) for a-b, a- or -n."""
    form = draw(st.sampled_from(["closed", "open", "suffix"]))
    a, b = draw(positions), draw(positions)
    if form == "closed":
        return f"bytes={a}-{b}", a, b, form
    if form == "open":
        return f"bytes={a}-", a, None, form
    return f"bytes=-{b}", None, b, form


@given(size=st.integers(0, 250), spec=single_range_specs())
def test_property_single_range_matches_slicing(
    size: int, spec: tuple[str, int | None, int | None, str]
) -> None:
    """Any single range gives 200/206/416 and a 206 selects exactly what slicing selects."""
    value, a, b, form = spec
    data = bytes(i % 256 for i in range(size))
    decision = evaluate("GET", {"Range": value}, Representation(size, ETAG, LM))
    if form == "closed":
        assert a is not None
        assert b is not None
        expected = None if a >= size or b < a else data[a : b + 1]
    elif form == "open":
        assert a is not None
        expected = None if a >= size else data[a:]
    else:
        assert b is not None
        expected = None if b == 0 else data[-b:]

    if size == 0:
        assert decision == Decision(200)
    elif expected is None:
        assert decision == Decision(416)
    else:
        assert decision.status == 206
        assert len(decision.ranges) == 1
        (r,) = decision.ranges
        assert 0 <= r.start <= r.end < size
        assert data[r.start : r.end + 1] == expected


@given(size=st.integers(0, 500), value=st.text(max_size=60), max_ranges=st.integers(0, 20))
def test_property_any_range_header_is_safe(size: int, value: str, max_ranges: int) -> None:
    """Arbitrary Range text never raises and any ranges stay in bounds within the guards."""
    decision = evaluate(
        "GET", {"Range": value}, Representation(size, ETAG, LM), max_ranges=max_ranges
    )
    assert decision.status in (200, 206, 416)
    assert (decision.status == 206) == bool(decision.ranges)
    assert len(decision.ranges) <= max_ranges
    assert sum(r.length for r in decision.ranges) <= size
    assert all(0 <= r.start <= r.end < size for r in decision.ranges)


@given(
    value=st.lists(
        st.one_of(
            st.tuples(positions, st.none() | positions).map(
                lambda t: f"{t[0]}-" + ("" if t[1] is None else str(t[1]))
            ),
            positions.map(lambda n: f"-{n}"),
        ),
        min_size=1,
        max_size=20,
    ).map(lambda specs: "bytes=" + ",".join(specs)),
    size=st.integers(1, 300),
)
def test_property_multi_range_in_bounds(value: str, size: int) -> None:
    """Well-formed multi-range sets resolve in request order to in-bounds ranges or a guard."""
    result = _parse(value, size)
    assert result in (IGNORE, NOT_SATISFIABLE) or isinstance(result, list)
    if isinstance(result, list):
        assert 1 <= len(result) <= 16
        assert all(0 <= start <= end < size for start, end in result)
        assert sum(end - start + 1 for start, end in result) <= size


boundaries = st.text(
    alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'()+_,-./:=?",
    min_size=1,
    max_size=70,
)


@st.composite
def range_lists(draw: st.DrawFn) -> tuple[int, list[ByteRange]]:
    """A file size and 1-6 in-bounds ranges of it."""
    size = draw(st.integers(1, 10**12))
    ranges = []
    for _ in range(draw(st.integers(1, 6))):
        start = draw(st.integers(0, size - 1))
        ranges.append(ByteRange(start, draw(st.integers(start, size - 1))))
    return size, ranges


@given(
    sized=range_lists(),
    content_type=st.sampled_from(["video/mp4", "application/octet-stream", "audio/ogg; x=1"]),
    boundary=boundaries,
)
def test_property_multipart_length(
    sized: tuple[int, list[ByteRange]], content_type: str, boundary: str
) -> None:
    """Content-Length equals the part headers plus the data plus the closing delimiter."""
    size, ranges = sized
    layout = multipart_layout(ranges, size, content_type, boundary)
    assert [r for _, r in layout.parts] == ranges
    expected = sum(len(h) + r.length for h, r in layout.parts) + len(layout.closing)
    assert layout.content_length == expected
    for header, r in layout.parts:
        assert header.startswith(f"\r\n--{boundary}\r\n".encode())
        assert header.endswith(f"Content-Range: {r.content_range(size)}\r\n\r\n".encode())
    assert layout.closing == f"\r\n--{boundary}--\r\n".encode()


@given(
    dt=st.datetimes(
        min_value=datetime(1, 1, 1),
        max_value=datetime(9999, 12, 31, 23, 59, 59),
        timezones=st.just(UTC),
    ).map(lambda d: d.replace(microsecond=0))
)
def test_property_http_date_round_trip(dt: datetime) -> None:
    """parse_http_date inverts http_date for every whole-second UTC datetime."""
    assert parse_http_date(http_date(dt)) == dt


@given(value=st.text(max_size=80))
def test_property_parse_http_date_never_raises(value: str) -> None:
    """parse_http_date returns a UTC datetime or None for any text."""
    result = parse_http_date(value)
    assert result is None or result.tzinfo is UTC


_BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _expected_name(filename: str) -> str:
    """The sanitized name the spec describes: no separators, controls or bidi; else 'file'."""
    kept = "".join(
        ch
        for ch in filename
        if ch not in "/\\" and ch not in _BIDI and unicodedata.category(ch) not in ("Cc", "Cs")
    ).strip()
    return kept if kept.strip(".") else "file"


DISPOSITION_SHAPE = re.compile(
    r"(inline|attachment); filename=\"[\x20\x21\x23-\x24\x26-\x5b\x5d-\x7e]*\"; "
    r"filename\*=UTF-8''([A-Za-z0-9!#$&+\-.^_`|~]|%[0-9A-F]{2})+"
)


@given(filename=st.text(max_size=40), attachment=st.booleans())
def test_property_content_disposition(filename: str, attachment: bool) -> None:
    """The header is ASCII, well-formed, and filename* decodes to the sanitized name."""
    header = content_disposition(filename, attachment=attachment)
    assert header.isascii()
    assert DISPOSITION_SHAPE.fullmatch(header)
    encoded = header.rpartition("; filename*=UTF-8''")[2]
    assert unquote(encoded, encoding="utf-8", errors="strict") == _expected_name(filename)
