"""A scriptable ModelClient for unit tests: the seam that keeps sockets out of the core."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bridge.domain import Instance, Prediction, Signature, Target
from bridge.errors import ModelCallError

Behaviour = Callable[[Sequence[Instance]], Prediction | ModelCallError]


def echo_amounts(instances: Sequence[Instance]) -> Prediction:
    """A model whose output is the input amount, served by version 7."""
    return Prediction(7, [{"y": instance.values["amount"][0]} for instance in instances])


class FakeModelClient:
    def __init__(
        self,
        behaviour: Behaviour = echo_amounts,
        ready: bool = True,
        up_after_probes: int = 0,
        signature: Signature | None = None,
    ) -> None:
        self.behaviour = behaviour
        self.signature = signature  # what GetModelMetadata answers, if asked
        self.ready = ready
        self.up_after_probes = up_after_probes  # >0: down until that many probes were made
        self.calls: list[int] = []  # batch size of each predict call
        self.probes = 0

    async def predict(
        self, target: Target, signature: Signature, instances: Sequence[Instance]
    ) -> Prediction:
        self.calls.append(len(instances))
        outcome = self.behaviour(instances)
        if isinstance(outcome, ModelCallError):
            raise outcome
        return outcome

    async def get_signature(self, target: Target) -> Signature:
        if self.signature is None:
            raise NotImplementedError("this test's client has no signature")
        return self.signature

    async def is_ready(self, target: Target) -> bool:
        self.probes += 1
        if self.up_after_probes and self.probes >= self.up_after_probes:
            self.ready = True
        return self.ready

    async def aclose(self) -> None:
        return None
