"""One lane per routed target: its signature, instance builder and batcher.

Routes name targets; a lane is what the pipeline needs to feed one of them.
New routes are checked against the server before they replace the old ones: a
target the server does not have rejects the whole change, and the previous
routes stay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from bridge.domain import Instance, Signature, Target
from bridge.errors import ModelCallError, ModelNotFoundError
from bridge.pipeline.batcher import Batcher
from bridge.pipeline.instances import InstanceBuilder
from bridge.pipeline.ledger import EventSlot
from bridge.pipeline.routing import Route, Routes, build_routes
from bridge.serving.client import ModelClient
from bridge.settings import Settings

log = structlog.get_logger(__name__)


class RoutesRejectedError(Exception):
    """The server does not have a target the routes name; the message names it."""


@dataclass(eq=False)
class Lane:
    name: str  # the route's name: a label, a version number, or "latest"
    target: Target
    signature: Signature
    builder: InstanceBuilder
    batcher: Batcher[Pending]
    refreshing: bool = field(default=False)


@dataclass(slots=True, eq=False)
class Pending:
    """An instance on its way to the model, with the slot its outcome goes to."""

    tp: Any  # aiokafka TopicPartition
    slot: EventSlot | None  # None for shadow traffic: nothing waits for it
    instance: Instance
    lane: Lane
    record: Any  # the ConsumerRecord


def initial_routes(settings: Settings) -> Routes:
    """The routes the settings give, used until (or without) a control topic."""
    model = settings.model
    if model.routes:
        weights = dict(model.routes)
    elif model.label is not None:
        weights = {model.label: 100}
    elif model.version is not None:
        weights = {str(model.version): 100}
    else:
        weights = {"latest": 100}
    shadow = None
    if model.shadow_target and model.shadow_fraction > 0:
        shadow = (model.shadow_target, model.shadow_fraction)
    return build_routes(model.name, weights, shadow, model.signature)


class Lanes:
    def __init__(
        self,
        client: ModelClient,
        settings: Settings,
        hold_if_down: Callable[[], Awaitable[bool]],
    ) -> None:
        self._client = client
        self._settings = settings
        self._hold_if_down = hold_if_down
        self.routes: Routes | None = None
        self.main: dict[str, Lane] = {}
        self.shadow: Lane | None = None
        # Targets whose signature is being waited for, and the server's last answer
        # (for readiness: a missing model is waited for, forever at start).
        self.waiting: dict[str, str] = {}
        # Open batches of lanes the last route change retired, until the pipeline takes them.
        self._retired: list[list[Pending]] = []

    @property
    def current(self) -> Routes:
        """The routes in force; the consume loop starts only once there are some."""
        if self.routes is None:
            raise RuntimeError("no routes applied yet: events cannot be routed")
        return self.routes

    @property
    def opened(self) -> bool:
        return self.routes is not None

    @property
    def all(self) -> list[Lane]:
        return [*self.main.values(), *([self.shadow] if self.shadow else [])]

    def lane_for(self, route: Route) -> Lane:
        return self.main[route.name]

    async def prepare(
        self, routes: Routes, *, wait_for_models: bool
    ) -> tuple[dict[str, Lane], Lane | None]:
        """Lanes for ``routes``, reusing known ones; holds while the server is down.

        ``wait_for_models``: at start, a model the server has not loaded yet is waited
        for (a sidecar may still be loading); a route change that names a model,
        version or label the server does not have is rejected at once.
        """
        known = {lane.name: lane for lane in self.main.values()}
        main = {}
        for route in routes.routes:
            if route.weight <= 0 and route.name not in known:
                continue  # a zero-weight route is never chosen; don't require its target
            main[route.name] = known.get(route.name) or await self._open(
                route.name, route.target, wait_for_models
            )
        shadow = None
        if routes.shadow is not None:
            reuse = self.shadow if self.shadow and self.shadow.name == routes.shadow.name else None
            shadow = reuse or await self._open(
                routes.shadow.name, routes.shadow.target, wait_for_models
            )
        return main, shadow

    async def _open(self, name: str, target: Target, wait_for_models: bool) -> Lane:
        signature = await self._signature(target, wait_for_models)
        settings = self._settings
        max_size = settings.batch.max_size
        if max_size > 1 and not signature.batchable:
            log.warning(
                "signature_not_batchable", target=str(target), action="one event per request"
            )
            max_size = 1
        builder = InstanceBuilder(signature, settings.model.input_map, settings.model.copy_fields)
        batcher: Batcher[Pending] = Batcher(max_size, settings.batch.max_wait_ms / 1000)
        log.info(
            "lane_opened",
            route=name,
            target=str(target),
            version=signature.version,
            inputs={k: [v.dtype.tf_name, v.shape] for k, v in signature.inputs.items()},
            outputs=sorted(signature.outputs),
        )
        return Lane(name, target, signature, builder, batcher)

    async def _signature(self, target: Target, wait_for_models: bool) -> Signature:
        delay = self._settings.retry.initial_backoff_ms / 1000
        cap = self._settings.retry.probe_max_backoff_ms / 1000
        try:
            while True:
                try:
                    return await self._client.get_signature(target)
                except ModelCallError as exc:
                    not_found = isinstance(exc, ModelNotFoundError)
                    if not exc.retriable or (not_found and not wait_for_models):
                        raise RoutesRejectedError(f"{target}: {exc.message}") from exc
                    log.warning("waiting_for_model", target=str(target), error=exc.message)
                    self.waiting[str(target)] = exc.message
                    if not await self._hold_if_down():
                        await asyncio.sleep(delay)  # up, but not ready for this target yet
                        delay = min(delay * 2, cap)
        finally:
            self.waiting.pop(str(target), None)

    def apply(self, routes: Routes, main: dict[str, Lane], shadow: Lane | None) -> None:
        """Switch to new routes; the open batches of retired lanes go out with the next due ones."""
        retired = [lane for lane in self.all if lane not in (*main.values(), shadow)]
        self.routes, self.main, self.shadow = routes, main, shadow
        self._retired += [batch for lane in retired if (batch := lane.batcher.take_all())]
        log.info("routes_applied", model=routes.model, routes=routes.describe())

    def deadline(self) -> float | None:
        deadlines = [d for lane in self.all if (d := lane.batcher.deadline()) is not None]
        if self._retired:
            deadlines.append(0.0)  # a retired lane's batch is due now
        return min(deadlines) if deadlines else None

    def take_due(self, now: float) -> list[list[Pending]]:
        due = [batch for lane in self.all if (batch := lane.batcher.take_due(now))]
        return self._take_retired() + due if self._retired else due

    def take_all(self) -> list[list[Pending]]:
        every = [batch for lane in self.all if (batch := lane.batcher.take_all())]
        return self._take_retired() + every if self._retired else every

    def _take_retired(self) -> list[list[Pending]]:
        retired, self._retired = self._retired, []
        return retired

    async def refresh(self, lane: Lane, served_version: int) -> None:
        """The served version changed (a label moved): re-read the signature once."""
        if lane.refreshing or served_version == lane.signature.version:
            return
        lane.refreshing = True
        try:
            signature = await self._client.get_signature(lane.target)
        except ModelCallError as exc:
            log.warning("signature_refresh_failed", target=str(lane.target), error=exc.message)
            return
        finally:
            lane.refreshing = False
        if signature.inputs != lane.signature.inputs:
            settings = self._settings
            lane.builder = InstanceBuilder(
                signature, settings.model.input_map, settings.model.copy_fields
            )
            log.info("signature_changed", target=str(lane.target), version=signature.version)
        lane.signature = signature
