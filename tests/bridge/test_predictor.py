"""Retries, outage holds and poison isolation, against a fake model client."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from bridge.domain import Failure, Instance, Prediction, Success, Target
from bridge.errors import (
    ModelCallError,
    ModelServerError,
    RejectedInputError,
    ServerBusyError,
    error_for_grpc_status,
)
from bridge.pipeline.instances import InstanceBuilder
from bridge.serving.health import ServerHealth
from bridge.serving.predictor import Predictor, RetryPolicy

from .fakes import FakeModelClient, echo_amounts
from .signatures import FRAUD, fraud_event

TARGET = Target("fraud", label="stable")
POLICY = RetryPolicy(max_attempts=3, initial_backoff_s=0.001, max_backoff_s=0.002)


def instances(amounts: Sequence[float]) -> list[Instance]:
    builder = InstanceBuilder(FRAUD)
    return [builder.build(fraud_event(amount=a)) for a in amounts]


def predictor(client: FakeModelClient) -> tuple[Predictor, ServerHealth]:
    health = ServerHealth(
        lambda: client.is_ready(TARGET), initial_backoff_s=0.001, max_backoff_s=0.005
    )
    return Predictor(client, health, POLICY), health


async def test_one_call_per_batch_and_outputs_split_back() -> None:
    client = FakeModelClient()
    outcomes = await predictor(client)[0].run(TARGET, FRAUD, instances([1, 2, 3]))
    assert client.calls == [3]
    assert [o.outputs for o in outcomes if isinstance(o, Success)] == [{"y": 1}, {"y": 2}, {"y": 3}]
    assert {o.version for o in outcomes if isinstance(o, Success)} == {7}


async def test_busy_server_is_retried_then_succeeds() -> None:
    answers: list[Prediction | ServerBusyError] = [
        ServerBusyError("queue full", grpc_status="RESOURCE_EXHAUSTED")
    ]

    def behaviour(batch: Sequence[Instance]) -> Prediction | ServerBusyError:
        return answers.pop() if answers else echo_amounts(batch)

    client = FakeModelClient(behaviour)
    (outcome,) = await predictor(client)[0].run(TARGET, FRAUD, instances([5]))
    assert isinstance(outcome, Success)
    assert outcome.attempts == 2


async def test_retries_are_bounded_while_the_server_is_up() -> None:
    client = FakeModelClient(lambda _: ServerBusyError("busy", grpc_status="RESOURCE_EXHAUSTED"))
    outcomes = await predictor(client)[0].run(TARGET, FRAUD, instances([1, 2]))
    assert len(client.calls) == POLICY.max_attempts
    assert all(isinstance(o, Failure) and o.attempts == 3 for o in outcomes)
    failure = outcomes[0]
    assert isinstance(failure, Failure)
    assert failure.error.retriable and failure.error.reason == "busy"
    assert failure.first_attempt_ms is not None and failure.last_attempt_ms is not None
    assert failure.first_attempt_ms <= failure.last_attempt_ms


# A server going down refuses new calls (UNAVAILABLE) and cancels those in flight (CANCELLED).
@pytest.mark.parametrize("code", ["UNAVAILABLE", "CANCELLED"])
async def test_an_outage_holds_and_never_fails(code: str) -> None:
    # Down for more probes than the retry limit: only an uncounted hold survives it.
    client = FakeModelClient(ready=False, up_after_probes=POLICY.max_attempts * 3)

    def behaviour(batch: Sequence[Instance]) -> Prediction | ModelCallError:
        if not client.ready:
            return error_for_grpc_status(code, "server going away")
        return echo_amounts(batch)

    client.behaviour = behaviour
    runner, health = predictor(client)
    outcomes = await asyncio.wait_for(runner.run(TARGET, FRAUD, instances([1, 2])), timeout=10)
    assert all(isinstance(o, Success) for o in outcomes)
    assert client.probes >= POLICY.max_attempts * 3
    assert health.outages == 1
    assert health.up
    await health.close()


async def test_no_retry_for_server_errors_about_the_model() -> None:
    client = FakeModelClient(lambda _: ModelServerError("boom", grpc_status="INTERNAL"))
    outcomes = await predictor(client)[0].run(TARGET, FRAUD, instances([1, 2]))
    assert client.calls == [2]
    assert all(isinstance(o, Failure) and o.error.reason == "model_error" for o in outcomes)


@pytest.mark.parametrize("bad_positions", [[0], [7], [3], [2, 5], list(range(8))])
async def test_poison_events_in_a_batch_fail_alone(bad_positions: list[int]) -> None:
    amounts = [float(i) for i in range(8)]
    bad = {amounts[i] for i in bad_positions}

    def behaviour(batch: Sequence[Instance]) -> Prediction | RejectedInputError:
        if any(instance.values["amount"][0] in bad for instance in batch):
            return RejectedInputError("NaN in input", grpc_status="INVALID_ARGUMENT")
        return echo_amounts(batch)

    client = FakeModelClient(behaviour)
    outcomes = await predictor(client)[0].run(TARGET, FRAUD, instances(amounts))
    failed = [i for i, o in enumerate(outcomes) if isinstance(o, Failure)]
    assert failed == bad_positions
    assert all(
        o.outputs == {"y": amounts[i]} for i, o in enumerate(outcomes) if isinstance(o, Success)
    )
    assert client.calls[0] == 8
    assert len(client.calls) <= 1 + 2 * len(bad_positions) * 3  # splitting stays logarithmic


async def test_a_missing_version_is_retried_for_a_bound_then_fails_fast() -> None:
    from bridge.errors import ModelNotFoundError

    client = FakeModelClient(
        lambda _: ModelNotFoundError(
            "Servable not found for request: Specific(fraud, 3)", grpc_status="NOT_FOUND"
        )
    )
    policy = RetryPolicy(3, 0.001, 0.002, not_found_timeout_s=0.05)
    health = ServerHealth(lambda: client.is_ready(TARGET), 0.001, 0.005)
    runner = Predictor(client, health, policy)
    (first,) = await runner.run(TARGET, FRAUD, instances([1]))
    assert isinstance(first, Failure) and first.error.reason == "model_not_found"
    assert first.attempts > policy.max_attempts  # bounded by time, not by the attempt count
    assert first.last_attempt_ms is not None and first.first_attempt_ms is not None
    assert first.last_attempt_ms - first.first_attempt_ms >= 40
    calls = len(client.calls)
    (second,) = await runner.run(TARGET, FRAUD, instances([2]))
    assert isinstance(second, Failure) and second.attempts == 1  # known gone: no second wait
    assert len(client.calls) == calls + 1
    client.behaviour = echo_amounts  # the version is back
    (third,) = await runner.run(TARGET, FRAUD, instances([3]))
    assert isinstance(third, Success)
    assert health.outages == 0  # the server was up all along: nothing paused


async def test_an_unexpected_exception_fails_only_the_event_that_causes_it() -> None:
    def behaviour(batch: Sequence[Instance]) -> Prediction:
        if any(instance.values["amount"] == [13] for instance in batch):
            raise ValueError("cannot encode 13")  # a bug in encoding, say, not a server error
        return echo_amounts(batch)

    client = FakeModelClient(behaviour)
    outcomes = await predictor(client)[0].run(TARGET, FRAUD, instances([1, 13, 3, 4]))
    assert [type(o).__name__ for o in outcomes] == ["Success", "Failure", "Success", "Success"]
    failed = outcomes[1]
    assert isinstance(failed, Failure)
    assert failed.error.reason == "internal_error"
    assert failed.error.message == "ValueError: cannot encode 13"
