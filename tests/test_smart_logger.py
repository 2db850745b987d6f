"""Tests for utils.smart_logger: time is injected, output is asserted as formatted text."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from utils.smart_logger import SmartLogFilter, install

from .clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    """A fresh fake clock per test."""
    return ManualClock()


@pytest.fixture
def stream() -> io.StringIO:
    """Captures what the handler writes."""
    return io.StringIO()


@pytest.fixture
def handler(stream: io.StringIO) -> logging.Handler:
    """A real StreamHandler with a plain message-only format."""
    h = logging.StreamHandler(stream)
    h.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    return h


@pytest.fixture
def log(request: pytest.FixtureRequest, handler: logging.Handler) -> Iterator[logging.Logger]:
    """An isolated logger (unique name, no propagation) wired to the capturing handler."""
    logger = logging.getLogger(f"test.smart.{request.node.name}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    yield logger
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[str]:
    """The emitted lines, without the trailing newline."""
    return stream.getvalue().splitlines()


def test_repeats_inside_window_emit_once(
    log: logging.Logger, handler: logging.Handler, stream: io.StringIO, clock: ManualClock
) -> None:
    """Five identical records inside one window produce exactly one line."""
    smart = install(handler, window_seconds=60, clock=clock)
    for _ in range(5):
        log.warning("disk full")
        clock.now += 1
    assert lines(stream) == ["WARNING disk full"]
    assert smart.stats()["suppressed_total"] == 4


@pytest.mark.parametrize(
    ("advance", "expected_suffix"),
    [
        (60.0, " (suppressed 4 similar messages in the last 60s)"),
        (90.5, " (suppressed 4 similar messages in the last 90.5s)"),
    ],
)
def test_first_record_after_window_reports_count(
    log: logging.Logger,
    handler: logging.Handler,
    stream: io.StringIO,
    clock: ManualClock,
    advance: float,
    expected_suffix: str,
) -> None:
    """The first record after the window passes with the number suppressed and the elapsed time."""
    smart = install(handler, window_seconds=60, clock=clock)
    start = clock.now
    for _ in range(5):
        log.warning("disk full")
    clock.now = start + advance
    log.warning("disk full")
    assert lines(stream) == ["WARNING disk full", f"WARNING disk full{expected_suffix}"]
    assert smart.stats()["pending"] == 0


def test_new_window_starts_after_report(
    log: logging.Logger, handler: logging.Handler, stream: io.StringIO, clock: ManualClock
) -> None:
    """After a report the key starts a fresh window, so the next repeat is suppressed again."""
    install(handler, window_seconds=10, clock=clock)
    log.info("tick")
    clock.now += 10
    log.info("tick")
    clock.now += 1
    log.info("tick")
    clock.now += 10
    log.info("tick")
    assert lines(stream) == [
        "INFO tick",
        "INFO tick",
        "INFO tick (suppressed 1 similar messages in the last 11s)",
    ]


def test_the_key_is_the_formatted_message(
    log: logging.Logger, handler: logging.Handler, stream: io.StringIO, clock: ManualClock
) -> None:
    """Same template, different arguments: different news, both shown; an exact repeat is not."""
    install(handler, clock=clock)
    log.warning("migrating schema %d to %d", 0, 1)
    log.warning("migrating schema %d to %d", 1, 2)
    log.warning("migrating schema %d to %d", 1, 2)
    assert lines(stream) == [
        "WARNING migrating schema 0 to 1",
        "WARNING migrating schema 1 to 2",
    ]


def test_a_traceback_is_not_hidden_behind_another_error(
    log: logging.Logger, handler: logging.Handler, stream: io.StringIO, clock: ManualClock
) -> None:
    """The same words with another exception type (a 500 after a malformed request) pass."""
    install(handler, clock=clock)
    for exc in (ValueError("bad range"), KeyError("boom"), ValueError("other")):
        try:
            raise exc
        except Exception:
            log.exception("request failed")
    text = stream.getvalue()
    assert text.count("ERROR request failed") == 2
    assert "KeyError: 'boom'" in text


def test_rate_key_still_groups_a_family(
    log: logging.Logger, handler: logging.Handler, stream: io.StringIO, clock: ManualClock
) -> None:
    install(handler, clock=clock)
    log.warning("client %s disconnected", "1.2.3.4", extra={"rate_key": "disconnect"})
    log.warning("client %s disconnected", "5.6.7.8", extra={"rate_key": "disconnect"})
    assert lines(stream) == ["WARNING client 1.2.3.4 disconnected"]


@pytest.mark.parametrize(
    ("first", "second", "expected_count"),
    [
        (("warning", "same"), ("error", "same"), 2),  # level is part of the key
        (("warning", "one"), ("warning", "two"), 2),  # different template
        (("warning", "same"), ("warning", "same"), 1),
    ],
)
def test_key_includes_level_and_template(
    log: logging.Logger,
    handler: logging.Handler,
    stream: io.StringIO,
    clock: ManualClock,
    first: tuple[str, str],
    second: tuple[str, str],
    expected_count: int,
) -> None:
    """Level and template both distinguish keys; identical pairs collapse."""
    install(handler, clock=clock)
    for level, msg in (first, second):
        getattr(log, level)(msg)
    assert len(lines(stream)) == expected_count


def test_explicit_rate_key_groups_different_templates(
    log: logging.Logger, handler: logging.Handler, stream: io.StringIO, clock: ManualClock
) -> None:
    """An explicit rate_key groups records regardless of their template."""
    smart = install(handler, clock=clock)
    log.error("upload to %s failed", "dc1", extra={"rate_key": "upload"})
    log.error("timeout talking to dc%d", 2, extra={"rate_key": "upload"})
    log.error("upload to %s failed", "dc1")  # no rate_key: its own template key
    assert lines(stream) == ["ERROR upload to dc1 failed", "ERROR upload to dc1 failed"]
    assert smart.size == 2


def test_unhashable_rate_key_does_not_raise(
    log: logging.Logger, handler: logging.Handler, stream: io.StringIO, clock: ManualClock
) -> None:
    """A list passed as rate_key is keyed by its text instead of breaking logging."""
    install(handler, clock=clock)
    log.info("a", extra={"rate_key": ["x"]})
    log.info("b", extra={"rate_key": ["x"]})
    assert lines(stream) == ["INFO a"]


def test_max_keys_bound_evicts_least_recently_seen(
    log: logging.Logger, handler: logging.Handler, stream: io.StringIO, clock: ManualClock
) -> None:
    """With max_keys=3, five keys leave three tracked and two evicted, oldest first."""
    smart = install(handler, max_keys=3, clock=clock)
    for name in ("k0", "k1", "k2"):
        log.info(name)
    log.info("k0")  # suppressed, but refreshes k0 so k1 becomes the oldest
    log.info("k3")
    log.info("k4")
    assert smart.size == 3
    stats = smart.stats()
    assert stats["evicted"] == 2
    assert stats["keys"] == 3
    # k0 survived eviction (still suppressed); k1 was evicted, so it passes again.
    log.info("k0")
    log.info("k1")
    assert lines(stream) == ["INFO k0", "INFO k1", "INFO k2", "INFO k3", "INFO k4", "INFO k1"]


def test_eviction_counts_unreported_suppressions(clock: ManualClock) -> None:
    """Evicting a key with a pending count records the loss in stats()."""
    smart = SmartLogFilter(max_keys=1, clock=clock)

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("n", logging.INFO, __file__, 1, msg, None, None)

    assert smart.filter(record("a")) is True
    assert smart.filter(record("a")) is False
    assert smart.stats()["pending"] == 1
    assert smart.filter(record("b")) is True
    assert smart.stats() == {
        "keys": 1,
        "suppressed_total": 1,
        "evicted": 1,
        "pending": 0,
        "unreported": 1,
    }


def test_cleanup_removes_stale_keys_and_returns_count(
    log: logging.Logger, handler: logging.Handler, clock: ManualClock
) -> None:
    """cleanup() drops expired keys with nothing pending and keeps fresh or pending ones."""
    smart = install(handler, window_seconds=60, clock=clock)
    log.info("stale-1")
    log.info("stale-2")
    log.info("pending")
    log.info("pending")  # suppressed: its count must survive cleanup
    clock.now += 100
    log.info("fresh")
    assert smart.cleanup() == 2
    assert smart.size == 2
    assert smart.cleanup() == 0
    # An explicit "now" overrides the clock: at +200 the fresh key has expired too.
    assert smart.cleanup(now=clock.now + 200) == 1
    assert smart.stats()["pending"] == 1


def test_pending_key_reports_after_cleanup(
    log: logging.Logger, handler: logging.Handler, stream: io.StringIO, clock: ManualClock
) -> None:
    """A key kept by cleanup because of its count still reports it when it recurs."""
    smart = install(handler, window_seconds=60, clock=clock)
    log.info("flap")
    log.info("flap")
    clock.now += 3600
    smart.cleanup()
    log.info("flap")
    assert lines(stream)[-1] == "INFO flap (suppressed 1 similar messages in the last 3600s)"


@pytest.mark.parametrize(
    ("msg", "args", "expected"),
    [
        ("user %s got %d bytes", ("bob", 42), "user bob got 42 bytes"),
        ("user %(user)s got %(n)d bytes", ({"user": "bob", "n": 42},), "user bob got 42 bytes"),
        ("progress 100%% of %s", ("f.bin",), "progress 100% of f.bin"),
        ("literal 100% no args", (), "literal 100% no args"),
        ("a dict as value: %s", ({"k": 1},), "a dict as value: {'k': 1}"),
    ],
)
def test_suffix_keeps_percent_formatting(
    log: logging.Logger,
    handler: logging.Handler,
    stream: io.StringIO,
    clock: ManualClock,
    msg: str,
    args: tuple[object, ...],
    expected: str,
) -> None:
    """Tuple, mapping and empty args still format correctly when the suffix is appended."""
    install(handler, window_seconds=5, clock=clock)
    log.info(msg, *args)
    log.info(msg, *args)
    clock.now += 5
    log.info(msg, *args)
    assert lines(stream) == [
        f"INFO {expected}",
        f"INFO {expected} (suppressed 1 similar messages in the last 5s)",
    ]


def test_non_string_message_is_keyed_by_text(
    log: logging.Logger, handler: logging.Handler, stream: io.StringIO, clock: ManualClock
) -> None:
    """Logging exception objects collapses equal texts instead of keying by identity."""
    install(handler, window_seconds=5, clock=clock)
    log.error(ValueError("boom"))
    log.error(ValueError("boom"))
    clock.now += 5
    log.error(ValueError("boom"))
    assert lines(stream) == [
        "ERROR boom",
        "ERROR boom (suppressed 1 similar messages in the last 5s)",
    ]


def test_second_handler_sees_same_key_after_suffix(clock: ManualClock) -> None:
    """A filter on a second handler keys on the original template, not the suffixed one."""
    first_out, second_out = io.StringIO(), io.StringIO()
    first, second = logging.StreamHandler(first_out), logging.StreamHandler(second_out)
    install(first, window_seconds=5, clock=clock)
    smart_second = install(second, window_seconds=5, clock=clock)
    logger = logging.getLogger("test.smart.two_handlers")
    logger.propagate = False
    logger.addHandler(first)
    logger.addHandler(second)
    try:
        logger.warning("x")
        logger.warning("x")
        clock.now += 5
        logger.warning("x")
    finally:
        logger.removeHandler(first)
        logger.removeHandler(second)
    assert smart_second.size == 1
    assert lines(first_out) == ["x", "x (suppressed 1 similar messages in the last 5s)"]
    assert lines(second_out) == ["x", "x (suppressed 1 similar messages in the last 5s)"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window_seconds": 0}, "window_seconds"),
        ({"max_keys": 0}, "max_keys"),
    ],
)
def test_rejects_invalid_settings(kwargs: dict[str, float], match: str) -> None:
    """Nonsensical window or bound raises ValueError at construction."""
    with pytest.raises(ValueError, match=match):
        SmartLogFilter(**kwargs)  # type: ignore[arg-type]
