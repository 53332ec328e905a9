"""The bridge's one exception tree. Every failure record names one of these classes.

    BridgeError                         reason              retriable
    ├── EventError                      (the event itself; no model call is made)
    │   ├── NotJsonError                not_json            no
    │   ├── NotAnObjectError            not_object          no
    │   ├── OversizeError               oversize            no
    │   ├── MissingInputError           missing_input       no
    │   ├── InputTypeError              wrong_type          no
    │   ├── InputShapeError             wrong_shape         no
    │   ├── FieldTooDeepError           too_deep            no   a copied field JSON cannot nest
    │   └── RecordError                 (Kafka's record itself could not be read as written)
    │       ├── BadHeaderError          bad_header          no   a header key that is not UTF-8
    │       ├── CorruptBatchError       corrupt_batch       no   CRC mismatch: recovered, untrusted
    │       ├── UndecodableBatchError   undecodable_batch   no   nothing recoverable: one record
    │       │                                                    for the batch's offset range
    │       └── ExpiredEventError       expired             no   its record timestamp is older
    │                                                            than DELIVERY__MAX_EVENT_AGE_MS
    ├── InternalError                   internal_error      no   a bug met while handling the event
    ├── UnwritableOutputError           output_refused      no   the broker refused the output:
    │                                                            written without the input value
    └── ModelCallError                  (a call to TF Serving failed; carries its status)
        ├── ServerUnavailableError      unavailable         yes  server down: hold, never fail
        ├── ServerBusyError             busy                yes  RESOURCE_EXHAUSTED, HTTP 429
        ├── DeadlineExceededError       deadline_exceeded   yes
        ├── AbortedError                aborted             yes
        ├── CallCancelledError          cancelled           yes  server shutting down: hold
        ├── ModelNotFoundError          model_not_found     yes  for a bounded time (mid-transition)
        ├── RejectedInputError          rejected_input      no   the data: split the batch
        └── ModelServerError            model_error         no   INTERNAL, UNKNOWN, ...

Library errors (``grpc.aio.AioRpcError``, ``httpx.HTTPError``) are translated in
one place each, ``error_for_grpc_status`` and ``error_for_http_status`` below,
and raised ``from`` the original.
"""

from __future__ import annotations

from typing import ClassVar


class BridgeError(Exception):
    """Base of every error the bridge records."""

    reason: ClassVar[str] = "error"
    retriable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EventError(BridgeError):
    """The event cannot become a model input; it fails alone and at once."""


class NotJsonError(EventError):
    reason = "not_json"


class NotAnObjectError(EventError):
    reason = "not_object"


class OversizeError(EventError):
    reason = "oversize"


class MissingInputError(EventError):
    reason = "missing_input"


class InputTypeError(EventError):
    reason = "wrong_type"


class InputShapeError(EventError):
    reason = "wrong_shape"


class FieldTooDeepError(EventError):
    reason = "too_deep"


class RecordError(EventError):
    """The Kafka record could not be read as it was written (the client library refused it)."""


class BadHeaderError(RecordError):
    reason = "bad_header"


class CorruptBatchError(RecordError):
    reason = "corrupt_batch"


class UndecodableBatchError(RecordError):
    reason = "undecodable_batch"


class ExpiredEventError(RecordError):
    """The record's timestamp says the event is too old to be worth a model call.

    Judged just before the call (so after an outage too); the bridge's clock against
    the record's CreateTime or LogAppendTime.
    """

    reason = "expired"

    @classmethod
    def aged(cls, age_ms: int, max_age_ms: int, timestamp_ms: int) -> ExpiredEventError:
        return cls(
            f"the event was {age_ms} ms old when the model would have been called, over "
            f"BRIDGE_DELIVERY__MAX_EVENT_AGE_MS={max_age_ms} (record timestamp {timestamp_ms}); "
            "not sent to the model"
        )


class InternalError(BridgeError):
    """An unexpected exception while handling one event: that event fails, not the process.

    The message names the exception type; the log line ``internal_error`` has the traceback.
    """

    reason = "internal_error"

    @classmethod
    def wrapping(cls, exc: BaseException) -> InternalError:
        return cls(f"{type(exc).__name__}: {exc}"[:500])


class UnwritableOutputError(BridgeError):
    """The broker refused an event's output record for good (too large, say)."""

    reason = "output_refused"


class ModelCallError(BridgeError):
    """A call to the model server failed; ``status`` is the gRPC code name or HTTP status."""

    def __init__(
        self, message: str, *, grpc_status: str | None = None, http_status: int | None = None
    ) -> None:
        super().__init__(message)
        self.grpc_status = grpc_status
        self.http_status = http_status

    @property
    def status(self) -> str:
        if self.grpc_status is not None:
            return self.grpc_status
        if self.http_status is not None:
            return str(self.http_status)
        return "CONNECTION"


class ServerUnavailableError(ModelCallError):
    """The server is down or not ready. Never a failure record: the bridge holds."""

    reason = "unavailable"
    retriable = True


class ServerBusyError(ModelCallError):
    reason = "busy"
    retriable = True


class DeadlineExceededError(ModelCallError):
    reason = "deadline_exceeded"
    retriable = True


class AbortedError(ModelCallError):
    reason = "aborted"
    retriable = True


class CallCancelledError(ModelCallError):
    """CANCELLED from the server: it dropped a call in flight, typically while shutting down.

    The bridge never cancels a call itself with an RPC error (its own cancellations are
    asyncio's), so this is the server going away: retried, and the outage hold applies.
    """

    reason = "cancelled"
    retriable = True


class ModelNotFoundError(ModelCallError):
    """The model, version or label is not (yet, or any more) on the server."""

    reason = "model_not_found"
    retriable = True


class RejectedInputError(ModelCallError):
    """The server refused the data; in a batch, the bad events are isolated by splitting."""

    reason = "rejected_input"


class ModelServerError(ModelCallError):
    reason = "model_error"


# TF Serving's gRPC codes -> our classes. Codes not listed are ModelServerError.
_GRPC_CODES: dict[str, type[ModelCallError]] = {
    "UNAVAILABLE": ServerUnavailableError,
    "RESOURCE_EXHAUSTED": ServerBusyError,
    "DEADLINE_EXCEEDED": DeadlineExceededError,
    "ABORTED": AbortedError,
    "CANCELLED": CallCancelledError,
    "NOT_FOUND": ModelNotFoundError,
    "INVALID_ARGUMENT": RejectedInputError,
    "FAILED_PRECONDITION": RejectedInputError,
    "OUT_OF_RANGE": RejectedInputError,
}

# TF Serving's REST statuses (its code -> HTTP table, read backwards).
_HTTP_STATUSES: dict[int, type[ModelCallError]] = {
    502: ServerUnavailableError,
    503: ServerUnavailableError,
    429: ServerBusyError,
    504: DeadlineExceededError,
    409: AbortedError,
    404: ModelNotFoundError,
    400: RejectedInputError,
}


def error_for_grpc_status(code_name: str, message: str) -> ModelCallError:
    cls = _GRPC_CODES.get(code_name, ModelServerError)
    return cls(message, grpc_status=code_name)


def error_for_http_status(status: int, message: str) -> ModelCallError:
    cls = _HTTP_STATUSES.get(status, ModelServerError)
    return cls(message, http_status=status)
