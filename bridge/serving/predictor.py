"""One batch of instances -> one outcome per instance.

Retries what is worth retrying (tenacity, exponential backoff with jitter),
holds through outages without counting them (``ServerHealth``), and isolates bad
events in a batch the server rejects because of its data by splitting it in
halves until only they fail.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)
from tenacity.wait import wait_base

from bridge.domain import Failure, Instance, Outcome, Prediction, Signature, Success, Target
from bridge.errors import (
    BridgeError,
    InternalError,
    ModelCallError,
    ModelNotFoundError,
    RejectedInputError,
)
from bridge.metrics import Histogram
from bridge.metrics.histograms import MODEL_CALL_BUCKETS_S
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

    def wait(self) -> wait_base:
        """Full jitter: uniform in [0, min(max, initial * 2**(n-1))] before attempt n+1."""
        return wait_random_exponential(multiplier=self.initial_backoff_s, max=self.max_backoff_s)


def _counted(exc: BaseException) -> bool:
    """Retried against ``max_attempts``: retriable, except a target the server lacks."""
    return (
        isinstance(exc, ModelCallError)
        and exc.retriable
        and not isinstance(exc, ModelNotFoundError)
    )


class _Calls:
    """The calls one batch made (attempts or not), for its failure records."""

    __slots__ = ("first_ms", "last_ms", "made", "route")

    def __init__(self, route: str) -> None:
        self.route = route  # for the call-duration histogram
        self.made = 0
        self.first_ms: int | None = None
        self.last_ms: int | None = None

    def one_more(self) -> None:
        self.made += 1
        self.last_ms = int(time.time() * 1000)
        self.first_ms = self.first_ms or self.last_ms


class CallFailedError(Exception):
    """Carries the final error with the calls made."""

    def __init__(self, error: BridgeError, calls: _Calls) -> None:
        super().__init__(error.message)
        self.error = error
        self.calls = calls


class HeldThroughOutageError(Exception):
    """The batch waited out a model-server outage and was not sent again (``back_after_outage``).

    Its caller judges the events again (their age, say) and sends what is still wanted.
    """


class Predictor:
    def __init__(
        self,
        client: ModelClient,
        health: ServerHealth,
        policy: RetryPolicy,
        *,
        back_after_outage: bool = False,
    ) -> None:
        self._client = client
        self._health = health
        self._policy = policy
        self._back_after_outage = back_after_outage
        self._gone: dict[Target, float] = {}  # targets NOT_FOUND past the bound
        # Seconds per model call, by (model, route, served version): "" when none served it.
        self.call_seconds = Histogram(MODEL_CALL_BUCKETS_S)
        self.retries: dict[str, int] = {}  # by the reason of the error retried

    async def run(
        self, target: Target, signature: Signature, instances: Sequence[Instance], route: str = ""
    ) -> list[Outcome]:
        started = time.perf_counter()
        try:
            prediction, calls = await self._call(target, signature, instances, route)
        except CallFailedError as failed:
            if isinstance(failed.error, RejectedInputError) and len(instances) > 1:
                # The data is at fault somewhere in the batch: halve until it is found.
                log.info(
                    "batch_rejected_splitting", size=len(instances), error=failed.error.message
                )
                return await self._split(target, signature, instances, route)
            calls = failed.calls
            return [
                Failure(failed.error, calls.made, calls.first_ms, calls.last_ms) for _ in instances
            ]
        except HeldThroughOutageError:
            raise  # to the caller, which asked for it: not a bug
        except Exception as exc:  # a bug met by one batch must not stop the bridge
            if len(instances) > 1:
                # One event may be what triggers it (an encoding corner): isolate it.
                log.warning("batch_internal_error_splitting", size=len(instances), error=repr(exc))
                return await self._split(target, signature, instances, route)
            log.exception("internal_error", stage="predict", target=str(target), exc_info=exc)
            return [Failure(InternalError.wrapping(exc), attempts=1)]
        model_ms = (time.perf_counter() - started) * 1000
        return [
            Success(outputs, prediction.version, calls.made, model_ms)
            for outputs in prediction.outputs
        ]

    async def _split(
        self, target: Target, signature: Signature, instances: Sequence[Instance], route: str
    ) -> list[Outcome]:
        middle = len(instances) // 2
        left = await self.run(target, signature, instances[:middle], route)
        return left + await self.run(target, signature, instances[middle:], route)

    def _retrying(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        reason = error.reason if isinstance(error, BridgeError) else "error"
        self.retries[reason] = self.retries.get(reason, 0) + 1
        log.debug("retrying", attempt=state.attempt_number, error=str(error))

    async def _call(
        self, target: Target, signature: Signature, instances: Sequence[Instance], route: str
    ) -> tuple[Prediction, _Calls]:
        """Tenacity owns the attempts and the waits between them.

        Three kinds of retry, nested: attempts counted against ``max_attempts`` (a busy
        or failing server); inside each, a target the server lacks, retried for
        ``not_found_timeout_s``; inside that, calls through outages, which are never
        attempts (the prober waited already, so the call is made again at once).
        """
        calls = _Calls(route)
        policy = self._policy
        attempts = AsyncRetrying(
            stop=stop_after_attempt(policy.max_attempts),
            wait=policy.wait(),
            retry=retry_if_exception(_counted),
            before_sleep=self._retrying,
            reraise=True,
        )
        try:
            async for attempt in attempts:
                with attempt:
                    prediction = await self._until_found(target, signature, instances, calls)
                    self._gone.pop(target, None)
                    return prediction, calls
        except ModelCallError as exc:
            raise CallFailedError(exc, calls) from exc
        raise AssertionError("unreachable: tenacity either returns or reraises")  # pragma: no cover

    async def _until_found(
        self, target: Target, signature: Signature, instances: Sequence[Instance], calls: _Calls
    ) -> Prediction:
        if target in self._gone:  # waited out once already: fail at once until it is back
            return await self._through_outages(target, signature, instances, calls)
        policy = self._policy
        waiting = AsyncRetrying(
            stop=stop_after_delay(policy.not_found_timeout_s),
            wait=policy.wait(),
            retry=retry_if_exception_type(ModelNotFoundError),
            before_sleep=self._retrying,
            reraise=True,
        )
        try:
            async for attempt in waiting:
                with attempt:
                    return await self._through_outages(target, signature, instances, calls)
        except ModelNotFoundError as exc:
            # The target stayed missing for the whole bound: later batches for it fail
            # without the wait, until a call to it succeeds again.
            self._gone[target] = time.monotonic()
            log.warning("target_gone", target=str(target), error=exc.message)
            raise
        raise AssertionError("unreachable: tenacity either returns or reraises")  # pragma: no cover

    async def _through_outages(
        self, target: Target, signature: Signature, instances: Sequence[Instance], calls: _Calls
    ) -> Prediction:
        while True:
            calls.one_more()
            started = time.perf_counter()
            try:
                prediction = await self._client.predict(target, signature, instances)
            except ModelCallError as exc:
                # Every call made is timed, answered or not (one that timed out takes
                # SERVING__TIMEOUT_MS); the outage hold that may follow is not in it.
                self._timed(started, target, calls.route, None)
                if not (exc.retriable and await self._health.hold_if_down()):
                    raise
                if self._back_after_outage:
                    raise HeldThroughOutageError from exc
                continue
            self._timed(started, target, calls.route, prediction.version)
            return prediction

    def _timed(self, started: float, target: Target, route: str, version: int | None) -> None:
        served = "" if version is None else str(version)
        self.call_seconds.observe(time.perf_counter() - started, (target.model, route, served))
