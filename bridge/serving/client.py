"""The one interface the pipeline uses to call a model server.

``GrpcModelClient`` and ``RestModelClient`` implement it against TF Serving; the
unit tests implement it with a few lines of fakes. Implementations translate
their library's errors into ``bridge.errors.ModelCallError`` subclasses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bridge.pipeline.instances import Instance
from bridge.serving.signature import Signature


@dataclass(frozen=True, slots=True)
class Target:
    """What a request asks for: a model, optionally pinned by label or version."""

    model: str
    label: str | None = None
    version: int | None = None
    signature: str = "serving_default"

    def __str__(self) -> str:
        if self.label is not None:
            return f"{self.model}@{self.label}"
        if self.version is not None:
            return f"{self.model}@{self.version}"
        return f"{self.model}@latest"


@dataclass(frozen=True, slots=True)
class Prediction:
    """A response split back per instance.

    ``version`` is the version that served the request, from the response when the
    protocol says it (gRPC always does; TF Serving's REST predict response does
    not, so REST knows it only when the target pins a version).
    """

    version: int | None
    outputs: list[dict[str, Any]]


class ModelClient(Protocol):
    async def predict(
        self, target: Target, signature: Signature, instances: Sequence[Instance]
    ) -> Prediction:
        """One Predict for all instances (batched along the first dimension)."""
        ...

    async def get_signature(self, target: Target) -> Signature:
        """The target's signature from GetModelMetadata."""
        ...

    async def is_ready(self, target: Target) -> bool:
        """Is the server up for this model? Never raises.

        True if the model has an AVAILABLE version, and also if the server answers
        that it does not know the model (it is up: waiting for it would not help,
        and a missing model must not look like an outage). False when the server
        cannot be reached or the model is still loading.
        """
        ...

    async def aclose(self) -> None: ...
