"""Batches to the model: ``batch.max_in_flight`` workers, each one Predict at a time.

A worker takes a batch from the queue, runs it through the predictor (retries,
outage holds, poison isolation) and resolves each event's slot with its outcome;
the delivery then writes the outputs in offset order. Shadow batches go to the
shadow mirror instead, which nothing waits for. With an age bound (``bridge.expiry``)
a batch's stale events are finished as ``expired`` just before the call, and a
batch that waited out an outage goes back to the queue to be judged again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from bridge.domain import Failure
from bridge.expiry import Expiry
from bridge.kafka.delivery import Delivery
from bridge.lanes import Lanes, Pending
from bridge.metrics import Histogram
from bridge.metrics.histograms import BATCH_SIZE_BUCKETS
from bridge.serving.predictor import HeldThroughOutageError, Predictor
from bridge.shadow import ShadowMirror
from bridge.tracing import OFF, Tracing

log = structlog.get_logger(__name__)


class Workers:
    def __init__(
        self,
        predictor: Predictor,
        delivery: Delivery,
        lanes: Lanes,
        shadow: ShadowMirror | None,
        tracing: Tracing = OFF,
        expiry: Expiry | None = None,
        clock: Callable[[], float] = time.time,  # wall clock: record timestamps are epoch
    ) -> None:
        self._expiry = expiry
        self._clock = clock
        self._predictor = predictor
        self._delivery = delivery
        self._lanes = lanes
        self._shadow = shadow
        self._tracing = tracing
        self._queue: asyncio.Queue[list[Pending]] = asyncio.Queue()
        self._background: set[asyncio.Task[None]] = set()
        self.batch_sizes = Histogram(BATCH_SIZE_BUCKETS)  # events per batch sent to the model

    def dispatch(self, batch: list[Pending]) -> None:
        if batch[0].slot is None:
            if self._shadow is not None:
                self._shadow.offer(batch)
        else:
            self._queue.put_nowait(batch)

    def flush(self) -> None:
        """Send every open batch now (a rebalance or the shutdown is waiting for them)."""
        for batch in self._lanes.take_all():
            self.dispatch(batch)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        delivery = self._delivery
        while True:
            batch = self._unexpired(await self._queue.get())
            if not batch:
                continue
            lane = batch[0].lane
            started = loop.time()
            self.batch_sizes.observe(len(batch))
            # The request's span is current inside: the client's call carries its context.
            try:
                with self._tracing.model_request(lane.target, lane.name, batch) as request:
                    outcomes = await self._predictor.run(
                        lane.target,
                        lane.signature,
                        [pending.instance for pending in batch],
                        lane.name,
                    )
                    request.done(outcomes)
            except HeldThroughOutageError:
                self._queue.put_nowait(batch)  # the outage is over: judged again, then sent
                continue
            failed = 0
            versions: set[int] = set()
            finished = []
            for pending, outcome in zip(batch, outcomes, strict=True):
                slot = pending.slot
                assert slot is not None  # noqa: S101 - main lanes always carry a slot
                slot.dispatched = started
                finished.append((pending.tp, slot, outcome))
                if isinstance(outcome, Failure):
                    failed += 1
                elif outcome.version is not None:
                    versions.add(outcome.version)
            delivery.finish_all(finished)
            # Per request: at debug, or per-event mode logs a line per event (see bridge.summary).
            log.debug(
                "batch",
                size=len(batch),
                failed=failed,
                model=lane.target.model,
                route=lane.name,
                versions=sorted(versions),
                ms=round((loop.time() - started) * 1000, 3),
            )
            for version in versions:
                if version != lane.signature.version:
                    self._in_background(self._lanes.refresh(lane, version))

    def _unexpired(self, batch: list[Pending]) -> list[Pending]:
        """The events still worth a model call; the stale ones end as ``expired`` now."""
        if self._expiry is None:
            return batch
        fresh, expired = self._expiry.split(batch, int(self._clock() * 1000))
        for pending, failure in expired:
            slot = pending.slot
            assert slot is not None  # noqa: S101 - main lanes always carry a slot
            self._delivery.finish(pending.tp, slot, failure)
        return fresh

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)  # a reference, or the loop may drop the task
        task.add_done_callback(self._background.discard)
