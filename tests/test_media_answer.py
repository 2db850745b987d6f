"""A media request's answer record is freed by reference counting alone (no cycle to collect)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streambot.media import _Answer


@pytest.fixture
def no_cycle_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Block:
    """Stands for an answer's upload.File: what must not outlive its answer."""


def test_an_answered_request_frees_its_block_without_a_collection(
    no_cycle_collector: None,
) -> None:
    seen: list[int] = []
    answer = _Answer(7, 1 << 20, lambda a: seen.append(a.msg_id))
    block = Block()
    answer.value = block
    answer.event.set()
    assert seen == [7]  # the callback still gets its answer
    freed = weakref.ref(block)
    del answer, block
    assert freed() is None


def test_an_abandoned_request_frees_its_record_without_a_collection(
    no_cycle_collector: None,
) -> None:
    answer = _Answer(8, 4096, lambda a: None)
    gone = weakref.ref(answer)
    del answer
    assert gone() is None
