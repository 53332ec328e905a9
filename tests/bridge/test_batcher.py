"""Micro-batches close on size, on time, and on a change of instance shape."""

from __future__ import annotations

import pytest

from bridge.pipeline.batcher import Batcher


def test_closes_when_full() -> None:
    batcher: Batcher[int] = Batcher(max_size=3, max_wait_s=1.0)
    assert batcher.add(1, "k", now=0.0) == []
    assert batcher.add(2, "k", now=0.1) == []
    assert batcher.add(3, "k", now=0.2) == [[1, 2, 3]]
    assert len(batcher) == 0
    assert batcher.deadline() is None


def test_closes_when_the_wait_is_over() -> None:
    batcher: Batcher[int] = Batcher(max_size=10, max_wait_s=0.005)
    batcher.add(1, "k", now=1.0)
    batcher.add(2, "k", now=1.004)
    assert batcher.deadline() == pytest.approx(1.005)
    assert batcher.take_due(1.0049) is None
    assert batcher.take_due(1.005) == [1, 2]
    assert batcher.take_due(2.0) is None


def test_per_event_mode_sends_each_at_once() -> None:
    batcher: Batcher[str] = Batcher(max_size=1, max_wait_s=0.0)
    assert batcher.add("a", None, now=0.0) == [["a"]]
    assert batcher.add("b", None, now=0.0) == [["b"]]


def test_a_new_shape_closes_the_open_batch() -> None:
    batcher: Batcher[int] = Batcher(max_size=10, max_wait_s=1.0)
    batcher.add(1, (2,), now=0.0)
    assert batcher.add(2, (3,), now=0.0) == [[1]]
    assert batcher.take_all() == [2]
    assert batcher.take_all() is None


def test_rejects_empty_batches() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Batcher(max_size=0, max_wait_s=0.0)
