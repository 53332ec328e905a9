"""Server-side batching (``--enable_batching``), modelled on TF Serving's BatchingSession.

One queue per (loaded version, signature, output set): requests' rows are merged
along dimension 0 into batches of up to ``max_batch_size``; a batch runs when it is
full or its oldest request has waited ``batch_timeout_micros``, on one of
``num_batch_threads`` threads shared by every queue. Batches are padded up to the
next ``allowed_batch_sizes`` entry with copies of their first row, and the outputs
are split back per request.

Admission follows the shared batch scheduler: a request larger than
``max_batch_size`` is INVALID_ARGUMENT; one that does not fit the open batch when
``max_enqueued_batches`` batches are already waiting is UNAVAILABLE at once. A
request whose run timeout passes while it waits is RESOURCE_EXHAUSTED.

The queues live on the event loop (no locks); only ``version.run`` goes to threads.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import grpc
import numpy as np

from bridge.wire.session_bundle_config_pb2 import BatchingParameters
from serving.errors import ServingError
from serving.predict import Call, Version

# The Int64Value fields of BatchingParameters.
_Int64Field = Literal[
    "max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"
]


@dataclass(frozen=True)
class BatchingOptions:
    """BatchingParameters with TF Serving's defaults for unset fields."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    @classmethod
    def from_proto(cls, params: BatchingParameters) -> BatchingOptions:
        """From a ``BatchingParameters`` message (wrapper fields read when set)."""
        defaults = cls()

        def wrapped(name: _Int64Field, default: int) -> int:
            return int(getattr(params, name).value) if params.HasField(name) else default

        options = cls(
            max_batch_size=wrapped("max_batch_size", defaults.max_batch_size),
            batch_timeout_micros=wrapped("batch_timeout_micros", defaults.batch_timeout_micros),
            max_enqueued_batches=wrapped("max_enqueued_batches", defaults.max_enqueued_batches),
            num_batch_threads=wrapped("num_batch_threads", defaults.num_batch_threads),
            allowed_batch_sizes=tuple(int(s) for s in params.allowed_batch_sizes),
            pad_variable_length_inputs=bool(params.pad_variable_length_inputs),
        )
        options.validate()
        return options

    def validate(self) -> None:
        """The checks TF Serving makes when it builds the batch scheduler."""

        def invalid(message: str) -> ServingError:
            return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)

        if self.max_batch_size <= 0:
            raise invalid("max_batch_size must be positive")
        if self.num_batch_threads <= 0:
            raise invalid("num_batch_threads must be positive")
        if self.max_enqueued_batches <= 0:
            raise invalid("max_enqueued_batches must be positive")
        sizes = self.allowed_batch_sizes
        if any(b <= a for a, b in itertools.pairwise(sizes)):
            raise invalid("allowed_batch_sizes entries must be monotonically increasing")
        if sizes and sizes[-1] != self.max_batch_size:
            raise invalid(
                "final entry in allowed_batch_sizes must equal max_batch_size when "
                "enable_large_batch_splitting is False"
            )


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def task_size(inputs: Mapping[str, np.ndarray]) -> int:
    """Rows in a request: the common dimension 0 of its inputs."""
    sizes = set()
    for array in inputs.values():
        if np.ndim(array) == 0:
            raise _invalid("Batching Run() inputs must have rank at least 1")
        sizes.add(np.shape(array)[0])
    if len(sizes) != 1:
        raise _invalid("Batching Run() input tensors must have equal 0th-dimension size")
    return int(sizes.pop())


@dataclass(eq=False)
class _Task:
    inputs: dict[str, np.ndarray]
    size: int
    deadline: float | None
    future: asyncio.Future[dict[str, np.ndarray]]


@dataclass(eq=False)
class _Batch:
    started: float = 0.0  # monotonic time of its first task
    tasks: list[_Task] = field(default_factory=list)
    size: int = 0

    def add(self, task: _Task) -> None:
        if not self.tasks:
            self.started = time.monotonic()
        self.tasks.append(task)
        self.size += task.size


@dataclass(eq=False)
class _Queue:
    version: Version  # held so the key's id() cannot be reused while queued
    call: Call
    batches: deque[_Batch] = field(default_factory=lambda: deque([_Batch()]))
    running: int = 0

    @property
    def idle(self) -> bool:
        return self.running == 0 and len(self.batches) == 1 and not self.batches[0].tasks


def _pad_to(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    widths = [(0, 0)] + [
        (0, want - have) for have, want in zip(array.shape[1:], shape, strict=True)
    ]
    fill: Any = b"" if array.dtype == object else 0
    return np.pad(array, widths, constant_values=fill)


class Batcher:
    """Batching for every loaded version, with one pool of batch threads."""

    def __init__(self, options: BatchingOptions) -> None:
        self.options = options
        self._pool = ThreadPoolExecutor(options.num_batch_threads, thread_name_prefix="batch")
        self._free_threads = options.num_batch_threads
        self._queues: dict[tuple[int, str, tuple[str, ...]], _Queue] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._drained = asyncio.Event()  # set once closing and every queue is empty

    def accepts(self, version: Version, call: Call) -> bool:
        """Like TF Serving, only the signature's full input and output sets are batched.

        A request with an ``output_filter`` subset has another tensor signature, for
        which no batch queue exists, so it runs on its own.
        """
        signature = version.signature_defs[call.signature_key]
        return set(call.inputs) == set(signature.inputs) and set(call.output_keys) == set(
            signature.outputs
        )

    async def run(
        self, version: Version, call: Call, deadline: float | None
    ) -> dict[str, np.ndarray]:
        if self._closing:
            raise ServingError(grpc.StatusCode.UNAVAILABLE, "Batch scheduler is shutting down")
        size = task_size(call.inputs)
        limit = self.options.max_batch_size
        if size > limit:
            raise _invalid(f"Task size {size} is larger than maximum input batch size {limit}")
        key = (id(version), call.signature_key, tuple(sorted(call.output_keys)))
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(version, call)
        open_batch = queue.batches[-1]
        if open_batch.size + size > limit:
            if len(queue.batches) >= self.options.max_enqueued_batches:
                raise ServingError(
                    grpc.StatusCode.UNAVAILABLE,
                    "The batch scheduling queue to which this task was submitted is full; "
                    f"currently {len(queue.batches)} batches enqueued and "
                    f"max_enqueued_batches is {self.options.max_enqueued_batches}",
                )
            open_batch = _Batch()
            queue.batches.append(open_batch)
        future: asyncio.Future[dict[str, np.ndarray]] = asyncio.get_running_loop().create_future()
        open_batch.add(_Task(dict(call.inputs), size, deadline, future))
        self._dispatch()
        # A caller that gives up cancels its future; the batch then skips its rows.
        return await future

    async def close(self) -> None:
        """Run what is queued without waiting for timeouts, then stop the threads."""
        self._closing = True
        self._dispatch()
        await self._drained.wait()
        if self._timer is not None:
            self._timer.cancel()
        self._pool.shutdown(wait=True)

    # -- scheduling (event loop only) -------------------------------------------

    def _ready(self, queue: _Queue, now: float) -> _Batch | None:
        """The queue's next batch to run: a closed one, or the open one once due."""
        if len(queue.batches) > 1:
            return queue.batches[0]
        batch = queue.batches[0]
        if not batch.tasks:
            return None
        due = batch.started + self.options.batch_timeout_micros / 1e6
        if self._closing or batch.size >= self.options.max_batch_size or now >= due:
            return batch
        return None

    def _dispatch(self) -> None:
        now = time.monotonic()
        while self._free_threads > 0:
            candidates = [
                (b.started, q, b) for q in self._queues.values() if (b := self._ready(q, now))
            ]
            if not candidates:
                break
            _, queue, batch = min(candidates, key=lambda c: c[0])
            queue.batches.popleft()
            if not queue.batches:
                queue.batches.append(_Batch())
            queue.running += 1
            self._free_threads -= 1
            asyncio.get_running_loop().create_task(self._process(queue, batch))
        self._arm_timer(now)
        for key in [k for k, q in self._queues.items() if q.idle]:
            del self._queues[key]
        if self._closing and not self._queues:
            self._drained.set()

    def _arm_timer(self, now: float) -> None:
        """Wake up when the earliest open batch reaches its timeout."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = [
            q.batches[-1].started + self.options.batch_timeout_micros / 1e6
            for q in self._queues.values()
            if q.batches[-1].tasks
        ]
        if due:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(0.0, min(due) - now), self._dispatch)

    async def _process(self, queue: _Queue, batch: _Batch) -> None:
        try:
            now = time.monotonic()
            tasks = []
            for task in batch.tasks:
                if task.future.done():
                    continue  # its caller went away
                if task.deadline is not None and now >= task.deadline:
                    task.future.set_exception(
                        ServingError(
                            grpc.StatusCode.RESOURCE_EXHAUSTED,
                            "Run() timeout exceeded while waiting in batching queue",
                        )
                    )
                    continue
                tasks.append(task)
            if tasks:
                await self._run_batch(queue, tasks)
        finally:
            queue.running -= 1
            self._free_threads += 1
            self._dispatch()

    async def _run_batch(self, queue: _Queue, tasks: Sequence[_Task]) -> None:
        call = queue.call
        try:
            inputs, rows = self._merge(tasks)
            # Every task's caller still holds the version; this hold covers the run
            # itself even if all of them give up meanwhile.
            with queue.version.in_flight():
                outputs = await asyncio.get_running_loop().run_in_executor(
                    self._pool, queue.version.run, call.signature_key, inputs, call.output_keys
                )
            results = self._split(outputs, tasks, rows)
        except ServingError as exc:
            for task in tasks:
                if not task.future.done():
                    task.future.set_exception(ServingError(exc.code, exc.message))
            return
        for task, result in zip(tasks, results, strict=True):
            if not task.future.done():
                task.future.set_result(result)

    def _merge(self, tasks: Sequence[_Task]) -> tuple[dict[str, np.ndarray], int]:
        size = sum(t.size for t in tasks)
        rows = next((s for s in self.options.allowed_batch_sizes if s >= size), size)
        merged = {}
        for name in tasks[0].inputs:
            parts = [t.inputs[name] for t in tasks]
            shapes = {p.shape[1:] for p in parts}
            if len(shapes) > 1:
                if not self.options.pad_variable_length_inputs:
                    raise _invalid(
                        f"Batching: input tensors {name} of the merged requests have "
                        f"different shapes {sorted(shapes)} and pad_variable_length_inputs "
                        "is false"
                    )
                if len({len(s) for s in shapes}) > 1:
                    raise _invalid(f"Batching: input tensors {name} have different ranks")
                widest = tuple(max(dims) for dims in zip(*shapes, strict=True))
                parts = [_pad_to(p, widest) for p in parts]
            array = np.concatenate(parts) if len(parts) > 1 else parts[0]
            if rows > size:
                array = np.concatenate([array, np.repeat(array[:1], rows - size, axis=0)])
            merged[name] = array
        return merged, rows

    @staticmethod
    def _split(
        outputs: Mapping[str, np.ndarray], tasks: Sequence[_Task], rows: int
    ) -> list[dict[str, np.ndarray]]:
        for array in outputs.values():
            if np.ndim(array) == 0 or np.shape(array)[0] != rows:
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "Batched output tensor has 0th dimension != input batch size",
                )
        results = []
        offset = 0
        for task in tasks:
            end = offset + task.size
            results.append({k: np.asarray(v)[offset:end] for k, v in outputs.items()})
            offset = end
        return results
