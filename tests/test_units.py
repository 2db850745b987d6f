"""Byte units and how sizes are written for people."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streambot.units import GB, KIB, MIB, bytes_text, gb_text, human_size, plural


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (MIB, "1.0 MiB"),
        (5 * MIB + MIB // 2, "5.5 MiB"),
        (1 << 30, "1.0 GiB"),
        (3 << 40, "3072.0 GiB"),
    ],
)
def test_human_size_picks_the_largest_binary_unit_up_to_gib(n: int, text: str) -> None:
    """Sizes are written in B, KiB, MiB or GiB, never beyond GiB."""
    assert human_size(n) == text


def test_quota_figures_are_decimal_gigabytes() -> None:
    """Quotas are configured and shown in GB (10^9 bytes), as transfer is billed."""
    assert GB == 10**9
    assert KIB * 1024 == MIB
    assert gb_text(1_500_000_000) == "1.50 GB"
    assert gb_text(0) == "0.00 GB"


@given(st.integers(0, 1 << 50))
def test_human_size_always_names_a_unit(n: int) -> None:
    """Whatever the size, the text is a number followed by one of the four units."""
    number, unit = human_size(n).split(" ")
    assert unit in {"B", "KiB", "MiB", "GiB"}
    assert float(number) >= 0


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (999, "999 B"), (5000, "5 kB"), (1_234_567, "1.23 MB"), (10**9, "1 GB"),
     (2_500_000_000_000, "2.5 TB")],
)  # fmt: skip
def test_bytes_text_is_decimal_with_three_digits(n: int, text: str) -> None:
    assert bytes_text(n) == text


@pytest.mark.parametrize(("n", "text"), [(0, "0 streams"), (1, "1 stream"), (2, "2 streams")])
def test_plural(n: int, text: str) -> None:
    assert plural(n, "stream") == text
