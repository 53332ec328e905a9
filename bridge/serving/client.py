"""The one interface the pipeline uses to call a model server.

``GrpcModelClient`` and ``RestModelClient`` implement it against TF Serving; the
unit tests implement it with a few lines of fakes. Implementations translate
their library's errors into ``bridge.errors.ModelCallError`` subclasses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from bridge.domain import Instance, Prediction, Signature, Target


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
