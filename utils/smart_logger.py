"""Rate-limited logging: collapse bursts of identical records into one line plus a count.

A flapping Telegram connection or a client hammering a dead link can emit the same warning
hundreds of times a minute; that drowns the useful lines and fills the disk. ``SmartLogFilter``
lets the first record of a kind through, drops repeats for ``window_seconds`` and, on the first
record after the window, appends how many were dropped, so no information about volume is lost.

Usage::

    handler = logging.StreamHandler()
    smart = install(handler, window_seconds=60)
    logging.getLogger().addHandler(handler)
    # scheduler job, every 30 min:
    smart.cleanup()

Two records are "the same" when they carry the same ``extra={"rate_key": ...}`` or, without
one, the same logger name, level, *formatted* message and exception type. Formatted, not the
template: "migrating 1 to 2" is news after "migrating 0 to 1", two access-log lines for two
requests are two lines, and a 500's traceback is never swallowed as a repeat of an earlier
malformed request's. A caller that wants a family of messages collapsed passes ``rate_key``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from streambot.cache import BoundedTTLCache

__all__ = ["SmartLogFilter", "install"]

#: Attribute a caller sets through ``extra=`` to choose the rate-limit key explicitly.
RATE_KEY_ATTR = "rate_key"

#: Attribute this module sets on a record before suffixing its ``msg``. The record object is
#: shared by every handler of the logger, so a second filter (on another handler) must key on
#: the original template, not on the already-suffixed one.
_ORIGINAL_MSG_ATTR = "_smart_log_original_msg"


@dataclass(slots=True)
class _KeyState:
    """Per-key bookkeeping: when the current window opened and how much it swallowed."""

    window_start: float
    suppressed: int = 0


def _format_seconds(seconds: float) -> str:
    """Render 61.0 as "61" and 0.5 as "0.5": the suffix is read by humans, not parsed."""
    return f"{seconds:.1f}".rstrip("0").rstrip(".")


class SmartLogFilter(logging.Filter):
    """Let one record per key through per window; count and later report the rest.

    Windows are fixed, not sliding: a window opens when a record passes and lasts
    ``window_seconds``. A steady stream of repeats therefore produces one line per window
    (each carrying the count of the previous window) instead of being silenced forever.

    Attach one instance to one handler (``install`` does that). The same instance on two
    handlers would see each record twice and drop it on the second handler as a repeat.

    Thread-safe: handlers are invoked from whichever thread logs (executor threads included),
    and ``logging.Handler.handle`` calls filters *before* taking the handler lock.
    """

    def __init__(
        self,
        window_seconds: float = 60.0,
        max_keys: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be > 0, got {window_seconds!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys!r}")
        super().__init__()
        self._window = float(window_seconds)
        self._max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        # Ordered least- to most-recently *seen* (suppressed records refresh a key too), so
        # eviction removes the key that has been quiet the longest.
        # The window is per key state, not a cache TTL, so only the LRU bound is used.
        self._keys: BoundedTTLCache[Hashable, _KeyState] = BoundedTTLCache(
            max_keys, clock=clock, on_evict=self._evicted_key
        )
        self._suppressed_total = 0
        self._evicted = 0
        # Suppressed records whose "(suppressed N ...)" line will never be written because
        # their key was evicted before it recurred. Counted so the loss is visible in stats().
        self._unreported = 0

    @staticmethod
    def _key_of(record: logging.LogRecord) -> Hashable:
        explicit = getattr(record, RATE_KEY_ATTR, None)
        if explicit is not None:
            # str(): an unhashable rate_key (a list, say) must not make logging raise.
            return (RATE_KEY_ATTR, str(explicit))
        msg = getattr(record, _ORIGINAL_MSG_ATTR, record.msg)
        # Non-str messages (log.error(exc)) are keyed by their text; exception objects hash by
        # identity and would give every occurrence its own key.
        text = msg if isinstance(msg, str) else str(msg)
        if record.args:
            try:
                text = text % record.args
            except (TypeError, ValueError, KeyError):  # a broken call: key on what we have
                text = f"{text} {record.args!r}"
        exc_type = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        return (record.name, record.levelno, text, exc_type)

    def filter(self, record: logging.LogRecord) -> bool:
        """Return False for a repeat inside the window; suffix the first record after it."""
        key = self._key_of(record)
        now = self._clock()
        with self._lock:
            state = self._keys.peek(key)
            if state is None:
                self._keys.put(key, _KeyState(window_start=now))
                return True
            self._keys.touch(key)
            elapsed = now - state.window_start
            if elapsed < self._window:
                state.suppressed += 1
                self._suppressed_total += 1
                return False
            suppressed = state.suppressed
            state.window_start = now
            state.suppressed = 0
        suffix = (
            f" (suppressed {suppressed} similar messages in the last {_format_seconds(elapsed)}s)"
            if suppressed
            else ""
        )
        self._set_suffix(record, suffix)
        return True

    @staticmethod
    def _set_suffix(record: logging.LogRecord, suffix: str) -> None:
        """Make ``record.msg`` the original template plus ``suffix``, leaving ``args`` alone.

        The suffix contains no ``%``, so ``msg % args`` formats exactly as before whether
        ``args`` is a tuple, a mapping (``log.info("%(a)s", {"a": 1})``) or empty. Rendering
        into ``msg`` and clearing ``args`` would also work but would hide the template from
        later handlers/filters (Sentry-style grouping keys on it).

        The record is shared by all handlers of the logger and handlers run one after the
        other, so a filter on a later handler rebuilds from the original template: each
        filtered handler prints its own count, never a suffix stacked on another's.
        """
        if hasattr(record, _ORIGINAL_MSG_ATTR):
            original = getattr(record, _ORIGINAL_MSG_ATTR)
        elif suffix:
            original = record.msg
            setattr(record, _ORIGINAL_MSG_ATTR, original)
        else:
            return
        record.msg = f"{original}{suffix}"

    def _evicted_key(self, _key: Hashable, old: _KeyState) -> None:
        """The bound pushed out the least recently seen key (lock held): count what it lost."""
        self._evicted += 1
        self._unreported += old.suppressed

    def cleanup(self, now: float | None = None) -> int:
        """Forget keys whose window has ended and which have nothing left to report.

        Keys still holding a suppressed count are kept on purpose: their count is printed when
        the message recurs, and dropping them here would lose that silently. They cannot pile
        up without limit because ``max_keys`` still bounds the cache (and eviction counts the
        loss in ``stats()["unreported"]``). Returns the number of keys removed.
        """
        if now is None:
            now = self._clock()
        with self._lock:
            stale = [
                key
                for key, state in self._keys.items()
                if state.suppressed == 0 and now - state.window_start >= self._window
            ]
            for key in stale:
                self._keys.pop(key)
        return len(stale)

    @property
    def max_keys(self) -> int:
        """The bound on tracked keys (LOG_CACHE_LIMIT)."""
        return self._max_keys

    @property
    def size(self) -> int:
        """Number of keys currently tracked (always <= max_keys)."""
        with self._lock:
            return len(self._keys)

    def stats(self) -> dict[str, int]:
        """Counters for /metrics and debugging.

        ``keys``: tracked keys; ``suppressed_total``: records dropped since creation;
        ``evicted``: keys pushed out by the ``max_keys`` bound; ``pending``: suppressed
        records waiting for their key to recur; ``unreported``: suppressed records whose
        count was lost to eviction.
        """
        with self._lock:
            return {
                "keys": len(self._keys),
                "suppressed_total": self._suppressed_total,
                "evicted": self._evicted,
                "pending": sum(state.suppressed for state in self._keys.values()),
                "unreported": self._unreported,
            }


def install(
    handler: logging.Handler,
    *,
    window_seconds: float = 60.0,
    max_keys: int = 1000,
    clock: Callable[[], float] = time.monotonic,
) -> SmartLogFilter:
    """Attach a new ``SmartLogFilter`` to ``handler`` and return it (for ``cleanup``/``stats``).

    The filter goes on a handler rather than a logger because logger filters only see records
    logged on that exact logger, not ones propagated from ``streambot.*`` children.
    """
    smart = SmartLogFilter(window_seconds=window_seconds, max_keys=max_keys, clock=clock)
    handler.addFilter(smart)
    return smart
