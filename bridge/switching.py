"""Routes -> lanes: the first routes before consuming, then every change an operator makes.

Routes come from the control topic when there is one (its latest record for the
model), else from the settings. Each set is checked against the model server
before it replaces the current one (``Lanes.prepare``); a change that names
something the server does not have is rejected and the current routes stay.
Preparing holds while the server is down, and a stop request ends that wait.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from bridge.lanes import Lane, Lanes, RoutesRejectedError, initial_routes
from bridge.pipeline.routing import Routes
from bridge.settings import Settings

log = structlog.get_logger(__name__)


class RouteSwitch:
    def __init__(self, settings: Settings, lanes: Lanes, stop: asyncio.Event) -> None:
        self._settings = settings
        self._lanes = lanes
        self._stop = stop
        # Route changes from the control topic, applied or rejected (the current ones stay).
        self.changes = {"applied": 0, "rejected": 0}

    async def open_settings_routes(self) -> None:
        """Unless the control topic gave usable routes already, the settings' routes.

        At start a sidecar may still be loading the model, so a model the server does
        not have yet is waited for. Raises ``RoutesRejectedError`` for routes the
        server can never serve, ``CancelledError`` if the bridge is told to stop.
        """
        if self._lanes.routes is None:
            routes = initial_routes(self._settings)
            main, shadow = await self._prepare(routes, wait_for_models=True)
            self._lanes.apply(routes, main, shadow)

    async def on_routes(self, routes: Routes | None) -> None:
        """New routes from the control topic (None: back to the settings'): check, then switch.

        Also at start: routes the server rejects are logged, and the settings' are used.
        """
        settings = self._settings
        routes = routes or initial_routes(settings)
        if routes.model != settings.model.name:
            return
        if routes.shadow is not None and not settings.topics.shadow:
            self.changes["rejected"] += 1
            log.error("routes_rejected", reason="a shadow target needs BRIDGE_TOPICS__SHADOW")
            return
        try:
            main, shadow = await self._prepare(routes, wait_for_models=False)
        except RoutesRejectedError as exc:
            self.changes["rejected"] += 1
            current = self._lanes.routes
            log.error(  # noqa: TRY400 - an operator's mistake, not a bug: no traceback
                "routes_rejected",
                routes=routes.describe(),
                reason=str(exc),
                keeping=current.describe() if current else None,
            )
            return
        self._lanes.apply(routes, main, shadow)
        self.changes["applied"] += 1

    async def _prepare(
        self, routes: Routes, *, wait_for_models: bool
    ) -> tuple[dict[str, Lane], Lane | None]:
        """Lanes for ``routes``; while the server is down this holds, and a stop ends it."""
        preparing = asyncio.ensure_future(
            self._lanes.prepare(routes, wait_for_models=wait_for_models)
        )
        stopping = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({preparing, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not preparing.done():
            preparing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await preparing
            raise asyncio.CancelledError
        return preparing.result()
