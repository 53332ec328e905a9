"""serving/batching.py with a fake version: merging, padding, admission, timeouts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest

from serving.batching import Batcher, BatchingOptions, task_size
from serving.errors import ServingError
from serving.predict import Call
from tests.serving.fake_version import FakeVersion

LONG_WAIT_MICROS = 60_000_000  # a batch that only runs when it is full


def call(rows: int, start: float = 0.0, outputs: tuple[str, ...] = ("y", "z")) -> Call:
    x = np.arange(start, start + rows, dtype=np.float32)
    return Call("serving_default", {"x": x}, outputs)


@pytest.fixture
async def make_batcher() -> AsyncIterator[type[Batcher]]:
    made: list[Batcher] = []

    def make(options: BatchingOptions) -> Batcher:
        batcher = Batcher(options)
        made.append(batcher)
        return batcher

    yield make  # type: ignore[misc]
    for batcher in made:
        await batcher.close()


async def wait_for(condition: object, what: str) -> None:
    """Poll a condition the test cannot await directly (bounded, no fixed sleep)."""
    for _ in range(3000):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"timed out waiting for {what}")


async def test_requests_merge_until_the_batch_is_full(make_batcher) -> None:  # type: ignore[no-untyped-def]
    batcher = make_batcher(BatchingOptions(max_batch_size=4, batch_timeout_micros=LONG_WAIT_MICROS))
    version = FakeVersion()
    first = asyncio.create_task(batcher.run(version, call(1, 10), None))
    await asyncio.sleep(0)
    assert not version.calls  # one row of four: the batch waits
    second = await batcher.run(version, call(3, 20), None)
    assert (await first)["y"].tolist() == [20.0]
    assert second["y"].tolist() == [40.0, 42.0, 44.0]
    assert len(version.calls) == 1
    assert version.calls[0]["x"].tolist() == [10, 20, 21, 22]


async def test_batches_are_padded_to_allowed_sizes(make_batcher) -> None:  # type: ignore[no-untyped-def]
    batcher = make_batcher(BatchingOptions(max_batch_size=4, allowed_batch_sizes=(2, 4)))
    version = FakeVersion()
    result = await batcher.run(version, call(3, 5), None)
    assert result["z"].tolist() == [6.0, 7.0, 8.0]
    # padded with copies of the first row
    assert version.calls[0]["x"].tolist() == [5, 6, 7, 5]


async def test_a_task_larger_than_the_batch_is_invalid(make_batcher) -> None:  # type: ignore[no-untyped-def]
    batcher = make_batcher(BatchingOptions(max_batch_size=4))
    with pytest.raises(ServingError) as info:
        await batcher.run(FakeVersion(), call(5), None)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.message == "Task size 5 is larger than maximum input batch size 4"


async def test_full_queue_is_unavailable_at_once(make_batcher) -> None:  # type: ignore[no-untyped-def]
    batcher = make_batcher(
        BatchingOptions(
            max_batch_size=2, max_enqueued_batches=1, batch_timeout_micros=LONG_WAIT_MICROS
        )
    )
    version = FakeVersion()
    waiting = asyncio.create_task(batcher.run(version, call(1, 1), None))
    await asyncio.sleep(0)
    with pytest.raises(ServingError) as info:
        await batcher.run(version, call(2), None)  # does not fit the one open batch
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert info.value.message.startswith(
        "The batch scheduling queue to which this task was submitted is full"
    )
    filler = await batcher.run(version, call(1, 3), None)  # fits: the batch fills and runs
    assert filler["y"].tolist() == [6.0]
    assert (await waiting)["y"].tolist() == [2.0]


async def test_a_busy_thread_lets_requests_accumulate(make_batcher) -> None:  # type: ignore[no-untyped-def]
    batcher = make_batcher(BatchingOptions(max_batch_size=8, num_batch_threads=1))
    version = FakeVersion()
    version.gate.clear()
    first = asyncio.create_task(batcher.run(version, call(1, 0), None))
    await wait_for(lambda: len(version.calls) == 1, "the first run to start")
    later = [asyncio.create_task(batcher.run(version, call(1, i), None)) for i in (1, 2, 3)]
    await asyncio.sleep(0)
    version.gate.set()
    results = await asyncio.gather(first, *later)
    assert [r["y"].tolist() for r in results] == [[0.0], [2.0], [4.0], [6.0]]
    assert [c["x"].tolist() for c in version.calls] == [[0], [1, 2, 3]]


async def test_timeout_while_queued_is_resource_exhausted(make_batcher) -> None:  # type: ignore[no-untyped-def]
    batcher = make_batcher(BatchingOptions(max_batch_size=4))
    with pytest.raises(ServingError) as info:
        await batcher.run(FakeVersion(), call(1), time.monotonic() - 1)
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.message == "Run() timeout exceeded while waiting in batching queue"


async def test_run_errors_reach_every_task_of_the_batch(make_batcher) -> None:  # type: ignore[no-untyped-def]
    def failing(*_: object) -> dict[str, np.ndarray]:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Expects arg[0] to be float")

    batcher = make_batcher(BatchingOptions(max_batch_size=2, batch_timeout_micros=LONG_WAIT_MICROS))
    version = FakeVersion(failing)
    results = await asyncio.gather(
        batcher.run(version, call(1), None),
        batcher.run(version, call(1), None),
        return_exceptions=True,
    )
    assert [str(r) for r in results] == ["Expects arg[0] to be float"] * 2
    assert len(version.calls) == 1


async def test_only_full_output_sets_are_batched(make_batcher) -> None:  # type: ignore[no-untyped-def]
    batcher = make_batcher(BatchingOptions())
    version = FakeVersion()
    assert batcher.accepts(version, call(1))
    assert not batcher.accepts(version, call(1, outputs=("y",)))


async def test_the_version_is_held_while_a_batch_runs(make_batcher) -> None:  # type: ignore[no-untyped-def]
    batcher = make_batcher(BatchingOptions(max_batch_size=4))
    version = FakeVersion()
    version.gate.clear()
    pending = asyncio.create_task(batcher.run(version, call(1), None))
    await wait_for(lambda: len(version.calls) == 1, "the run to start")
    assert version.holds == 1
    version.gate.set()
    await pending
    assert version.holds == 0


def test_task_size_needs_a_common_batch_dimension() -> None:
    assert task_size({"a": np.zeros((3, 2)), "b": np.zeros(3)}) == 3
    with pytest.raises(ServingError, match="must have rank at least 1"):
        task_size({"a": np.float32(1)})
    with pytest.raises(ServingError, match="equal 0th-dimension size"):
        task_size({"a": np.zeros(2), "b": np.zeros(3)})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (BatchingOptions(max_batch_size=8, allowed_batch_sizes=(2, 4)), "final entry"),
        (BatchingOptions(max_batch_size=8, allowed_batch_sizes=(4, 2, 8)), "monotonically"),
        (BatchingOptions(max_batch_size=0), "max_batch_size must be positive"),
    ],
)
def test_options_are_checked(options: BatchingOptions, message: str) -> None:
    with pytest.raises(ServingError, match=message):
        options.validate()


def test_options_from_batching_parameters_file_message() -> None:
    from serving.model_config import BatchingParameters

    params = BatchingParameters()
    params.max_batch_size.value = 32  # type: ignore[attr-defined]
    params.allowed_batch_sizes.extend([8, 32])  # type: ignore[attr-defined]
    options = BatchingOptions.from_proto(params)
    assert options.max_batch_size == 32
    assert options.allowed_batch_sizes == (8, 32)
    assert options.max_enqueued_batches == 10  # upstream's default for an unset field
    assert options.batch_timeout_micros == 0
