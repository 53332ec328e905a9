"""Is the model server up? One shared answer, so an outage pauses the whole bridge.

After a retriable error, a caller asks ``hold_if_down()``: if a probe (GetModelStatus
or the REST status route) fails, the server is marked down, consumption pauses,
one prober keeps probing with capped, jittered exponential backoff, and every
caller waits until it is back. Attempts made during an outage are not counted
against the retry limit, so an outage never turns into failure records.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)

Probe = Callable[[], Awaitable[bool]]


class ServerHealth:
    def __init__(self, probe: Probe, initial_backoff_s: float, max_backoff_s: float) -> None:
        self._probe = probe
        self._initial_backoff_s = initial_backoff_s
        self._max_backoff_s = max_backoff_s
        self._up = asyncio.Event()
        self._up.set()
        self._prober: asyncio.Task[None] | None = None
        self.outages = 0

    @property
    def up(self) -> bool:
        return self._up.is_set()

    async def hold_if_down(self) -> bool:
        """Probe once (or join an outage in progress); wait while down. True if it was down."""
        if self.up and await self._safe_probe():
            return False
        self.mark_down()
        await self._up.wait()
        return True

    def mark_down(self) -> None:
        if not self.up:
            return
        self.outages += 1
        self._up.clear()
        log.warning("model_server_down", action="pausing consumption and probing")
        self._prober = asyncio.create_task(self._probe_until_up(), name="health-prober")

    async def _probe_until_up(self) -> None:
        delay = self._initial_backoff_s
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311 - jitter, not crypto
            if await self._safe_probe():
                break
            delay = min(delay * 2, self._max_backoff_s)
        log.info("model_server_up", down_s=round(loop.time() - started, 3))
        self._up.set()

    async def _safe_probe(self) -> bool:
        try:
            return await self._probe()
        except Exception:  # a probe that breaks means "not up"; it is retried
            log.debug("probe_failed", exc_info=True)
            return False

    async def close(self) -> None:
        if self._prober is not None and not self._prober.done():
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)
