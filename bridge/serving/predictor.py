"""One batch of instances -> one outcome per instance.

Retries what is worth retrying (tenacity, exponential backoff with jitter),
holds through outages without counting them (``ServerHealth``), and isolates bad
events in a batch the server rejects because of its data by splitting it in
halves until only they fail.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from bridge.domain import Failure, Instance, Outcome, Prediction, Signature, Success, Target
from bridge.errors import (
    BridgeError,
    InternalError,
    ModelCallError,
    ModelNotFoundError,
    RejectedInputError,
)
from bridge.serving.client import ModelClient
from bridge.serving.health import ServerHealth

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Built once from the settings."""

    max_attempts: int  # counted while the server is up
    initial_backoff_s: float
    max_backoff_s: float
    # A missing version or label may be mid-transition on the server: retried for
    # this long (not counted in max_attempts), then its events fail.
    not_found_timeout_s: float = 30.0

    def backoff(self, counted: int) -> float:
        """Full jitter: uniform in [0, min(max, initial * 2**(n-1))]."""
        ceiling = min(
            self.max_backoff_s, self.initial_backoff_s * 2 ** min(max(counted - 1, 0), 30)
        )
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not crypto


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, ModelCallError) and exc.retriable


class _CallState:
    """Per call: attempts that count, and when the first and last were made."""

    __slots__ = ("counted", "first_ms", "last_ms", "made", "not_found_since", "outage")

    def __init__(self) -> None:
        self.counted = 0
        self.made = 0
        self.first_ms: int | None = None
        self.last_ms: int | None = None
        self.outage = False
        self.not_found_since: float | None = None  # monotonic time of the first NOT_FOUND


class CallFailedError(Exception):
    """Carries the final error with the attempt bookkeeping."""

    def __init__(self, error: BridgeError, state: _CallState) -> None:
        super().__init__(error.message)
        self.error = error
        self.state = state


class Predictor:
    def __init__(self, client: ModelClient, health: ServerHealth, policy: RetryPolicy) -> None:
        self._client = client
        self._health = health
        self._policy = policy
        self._gone: dict[Target, float] = {}  # targets NOT_FOUND past the bound

    async def run(
        self, target: Target, signature: Signature, instances: Sequence[Instance]
    ) -> list[Outcome]:
        started = time.perf_counter()
        try:
            prediction, state = await self._call(target, signature, instances)
        except CallFailedError as failed:
            if isinstance(failed.error, RejectedInputError) and len(instances) > 1:
                # The data is at fault somewhere in the batch: halve until it is found.
                log.info(
                    "batch_rejected_splitting", size=len(instances), error=failed.error.message
                )
                return await self._split(target, signature, instances)
            state = failed.state
            return [
                Failure(failed.error, state.made, state.first_ms, state.last_ms) for _ in instances
            ]
        except Exception as exc:  # a bug met by one batch must not stop the bridge
            if len(instances) > 1:
                # One event may be what triggers it (an encoding corner): isolate it.
                log.warning("batch_internal_error_splitting", size=len(instances), error=repr(exc))
                return await self._split(target, signature, instances)
            log.exception("internal_error", stage="predict", target=str(target), exc_info=exc)
            return [Failure(InternalError.wrapping(exc), attempts=1)]
        model_ms = (time.perf_counter() - started) * 1000
        return [
            Success(outputs, prediction.version, state.made, model_ms)
            for outputs in prediction.outputs
        ]

    async def _split(
        self, target: Target, signature: Signature, instances: Sequence[Instance]
    ) -> list[Outcome]:
        middle = len(instances) // 2
        left = await self.run(target, signature, instances[:middle])
        return left + await self.run(target, signature, instances[middle:])

    async def _call(
        self, target: Target, signature: Signature, instances: Sequence[Instance]
    ) -> tuple[Prediction, _CallState]:
        state = _CallState()
        policy = self._policy

        def stop(_: RetryCallState) -> bool:
            if state.not_found_since is not None:
                if target in self._gone:
                    return True  # already waited out once: fail at once until it is back
                return time.monotonic() - state.not_found_since >= policy.not_found_timeout_s
            return state.counted >= policy.max_attempts

        def wait(_: RetryCallState) -> float:
            # After an outage the prober already waited; retry at once.
            if state.outage:
                return 0.0
            return policy.backoff(state.made if state.not_found_since else state.counted)

        retrying = AsyncRetrying(
            retry=retry_if_exception(_retriable), stop=stop, wait=wait, reraise=True
        )
        try:
            async for attempt in retrying:
                with attempt:
                    state.made += 1
                    state.last_ms = int(time.time() * 1000)
                    state.first_ms = state.first_ms or state.last_ms
                    try:
                        prediction = await self._client.predict(target, signature, instances)
                    except ModelCallError as exc:
                        state.outage = exc.retriable and await self._health.hold_if_down()
                        if isinstance(exc, ModelNotFoundError) and not state.outage:
                            state.not_found_since = state.not_found_since or time.monotonic()
                        elif not state.outage:
                            state.not_found_since = None
                            state.counted += 1
                        if exc.retriable and not stop(attempt.retry_state):
                            log.debug("retrying", target=str(target), error=exc.message)
                        raise
                    self._gone.pop(target, None)
                    return prediction, state
        except ModelCallError as exc:
            if isinstance(exc, ModelNotFoundError) and target not in self._gone:
                # The target stayed missing for the whole bound: later batches for it
                # fail without the wait, until a call to it succeeds again.
                self._gone[target] = time.monotonic()
                log.warning("target_gone", target=str(target), error=exc.message)
            raise CallFailedError(exc, state) from exc
        raise AssertionError("unreachable: tenacity either returns or reraises")  # pragma: no cover
