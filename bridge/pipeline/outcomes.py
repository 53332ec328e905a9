"""What became of one event: a result to publish, or a failure to dead-letter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.errors import BridgeError


@dataclass(slots=True)
class Success:
    outputs: dict[str, Any]
    version: int | None  # the version that served it, when the protocol says
    attempts: int
    model_ms: float  # duration of the successful call


@dataclass(slots=True)
class Failure:
    error: BridgeError
    attempts: int  # model calls made (0: the event never reached the model)
    first_attempt_ms: int | None = None  # epoch milliseconds
    last_attempt_ms: int | None = None


Outcome = Success | Failure
