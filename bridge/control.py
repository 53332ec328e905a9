"""Follow the compacted control topic, so every replica switches routes at once.

Every replica reads the whole topic outside any consumer group (key = model
name, value = routes JSON, a null value = back to the settings' routes). At
start it reads up to the end before consuming events, so it begins with the
routes in force (``bridge.kafka.control_topic``, the reader ``bridge routes
show`` uses too); then it applies each new record as it arrives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from bridge.kafka.clients import make_reader
from bridge.kafka.control_topic import ControlTopicReader, ModelRoutes, apply_record, model_of
from bridge.pipeline.routing import Routes
from bridge.settings import KafkaSettings

log = structlog.get_logger(__name__)

OnRoutes = Callable[[Routes | None], Awaitable[None]]
TOPIC_WAIT_S = 10.0
FETCH_WAIT_MS = 1000
FAILED_FETCH_WAIT_S = 1.0


class RoutesFollower:
    def __init__(
        self, kafka: KafkaSettings, topic: str, model: str, signature: str, on_routes: OnRoutes
    ) -> None:
        self._kafka = kafka
        self._topic = topic
        self._model = model
        self._signature = signature
        self._on_routes = on_routes
        self._reader: ControlTopicReader | None = None
        self._current: ModelRoutes | None = None

    async def start(self) -> None:
        """Assign every partition of the control topic and apply what it holds now."""
        reader = self._reader = ControlTopicReader(
            make_reader(self._kafka, self._kafka.request_timeout_ms), self._topic
        )
        if not await reader.open(TOPIC_WAIT_S):
            log.warning(
                "control_topic_missing", topic=self._topic, action="using the settings' routes"
            )
            return
        state = await reader.read_to_end(self._signature)
        if state.unreadable is not None:  # start with what was read (or the settings' routes)
            log.error(
                "control_topic_unreadable", topic=self._topic, at="start", error=state.unreadable
            )
        entry = self._current = state.models.get(self._model)
        if entry is None:
            return
        if entry.problem is not None:
            self._rejected(entry)
            if entry.routes is None:
                return  # nothing valid before it either: the settings' routes
        await self._apply(entry)

    async def run(self) -> None:
        """Apply each new control record for our model, in order."""
        reader = self._reader
        if reader is None or not reader.assigned:
            return
        failing = False
        while True:
            try:
                records = await reader.fetch(FETCH_WAIT_MS)
            except Exception:  # a record it cannot read must not stop the bridge
                # The routes stay as they are; the log says why they stopped following.
                # (The consumed topic's salvage path is not used here: one control record
                # per model, written by `bridge routes set`.)
                if not failing:
                    log.exception("control_topic_unreadable", topic=self._topic)
                failing = True
                await asyncio.sleep(FAILED_FETCH_WAIT_S)
                continue
            failing = False
            for record in records:
                if model_of(record) != self._model:
                    continue
                entry = self._current = apply_record(
                    self._current, self._model, record, self._signature
                )
                if entry.problem is not None:
                    self._rejected(entry)  # the routes in force stay
                else:
                    await self._apply(entry)

    async def _apply(self, entry: ModelRoutes) -> None:
        if entry.deleted:
            log.info("routes_deleted", model=self._model, action="using the settings' routes")
        await self._on_routes(entry.routes)

    def _rejected(self, entry: ModelRoutes) -> None:
        log.error("routes_rejected", model=self._model, reason=entry.problem)

    async def stop(self) -> None:
        if self._reader is not None:
            await self._reader.close()
