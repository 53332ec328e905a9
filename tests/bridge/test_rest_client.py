"""The REST client against TF Serving's REST API, through httpx's MockTransport (no sockets):
the requests it makes, and how each kind of answer becomes a prediction or an error."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import orjson
import pytest

from bridge.domain import Instance, Target
from bridge.errors import (
    DeadlineExceededError,
    ModelNotFoundError,
    ModelServerError,
    RejectedInputError,
    ServerUnavailableError,
)
from bridge.pipeline.instances import InstanceBuilder
from bridge.serving.rest_client import RestModelClient

from .signatures import FRAUD, fraud_event

Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler) -> RestModelClient:
    return RestModelClient("http://sidecar:8501/", 1.0, 0.5, transport=httpx.MockTransport(handler))


def instances(count: int) -> list[Instance]:
    builder = InstanceBuilder(FRAUD)
    return [builder.build(fraud_event(amount=float(i))) for i in range(count)]


async def test_predict_posts_rows_to_the_label_route_and_splits_the_predictions() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        rows = orjson.loads(request.content)["instances"]
        predictions = [
            {"fraud_probability": row["amount"] / 10, "flagged": row["amount"] > 1} for row in rows
        ]
        return httpx.Response(200, json={"predictions": predictions})

    rest = client(handler)
    prediction = await rest.predict(Target("fraud", label="canary"), FRAUD, instances(3))
    await rest.aclose()
    (request,) = seen
    assert request.method == "POST"
    assert request.url.path == "/v1/models/fraud/labels/canary:predict"
    body = orjson.loads(request.content)
    assert body["signature_name"] == "serving_default"
    assert [row["amount"] for row in body["instances"]] == [0.0, 1.0, 2.0]
    assert len(body["instances"][0]["pca"]) == 28
    assert [o["flagged"] for o in prediction.outputs] == [False, False, True]
    assert prediction.version is None  # a label: REST does not say which version served


async def test_a_pinned_version_is_the_served_version() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/models/fraud/versions/2:predict"
        return httpx.Response(200, json={"predictions": [{"fraud_probability": 0.1, "flagged": 0}]})

    prediction = await client(handler).predict(Target("fraud", version=2), FRAUD, instances(1))
    assert prediction.version == 2


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (404, {"error": "Servable not found for request: Specific(fraud, 9)"}, ModelNotFoundError),
        (400, {"error": "Expected float, got 'x'"}, RejectedInputError),
        (503, {"error": "the server is shutting down"}, ServerUnavailableError),
        (500, b"<html>proxy error</html>", ModelServerError),
    ],
)
async def test_error_answers_become_the_error_tree(
    status: int, body: object, expected: type[Exception]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, bytes):
            return httpx.Response(status, content=body)
        return httpx.Response(status, json=body)

    with pytest.raises(expected):
        await client(handler).predict(Target("fraud"), FRAUD, instances(1))


async def test_a_short_answer_is_a_server_error_not_a_misaligned_result() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"predictions": [{"fraud_probability": 0.1}]})

    with pytest.raises(ModelServerError, match="1 predictions for 2 instances"):
        await client(handler).predict(Target("fraud"), FRAUD, instances(2))


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (httpx.ConnectError("refused"), ServerUnavailableError),
        (httpx.ConnectTimeout("slow connect"), ServerUnavailableError),
        (httpx.ReadTimeout("slow answer"), DeadlineExceededError),
    ],
)
async def test_transport_failures_are_retriable_errors(
    raised: Exception, expected: type[Exception]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise raised

    with pytest.raises(expected) as caught:
        await client(handler).predict(Target("fraud"), FRAUD, instances(1))
    assert caught.value.retriable  # type: ignore[attr-defined]


async def test_is_ready_reads_the_version_states_and_never_raises() -> None:
    answers = iter(
        [
            httpx.Response(200, json={"model_version_status": [{"state": "LOADING"}]}),
            httpx.Response(200, json={"model_version_status": [{"state": "AVAILABLE"}]}),
            httpx.Response(404, json={"error": "no such model"}),  # up, just not there
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/models/fraud"
        try:
            return next(answers)
        except StopIteration:
            raise httpx.ConnectError("gone") from None

    rest = client(handler)
    assert [await rest.is_ready(Target("fraud")) for _ in range(4)] == [False, True, True, False]


async def test_get_signature_from_metadata() -> None:
    metadata = {
        "model_spec": {"name": "fraud", "version": "2"},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    "serving_default": {
                        "inputs": {
                            "amount": {
                                "dtype": "DT_FLOAT",
                                "tensor_shape": {"dim": [{"size": "-1"}]},
                            }
                        },
                        "outputs": {
                            "flagged": {
                                "dtype": "DT_BOOL",
                                "tensor_shape": {"dim": [{"size": "-1"}]},
                            }
                        },
                    }
                }
            }
        },
    }

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/models/fraud/metadata"
        return httpx.Response(200, json=metadata)

    signature = await client(handler).get_signature(Target("fraud"))
    assert signature.version == 2
    assert signature.inputs["amount"].shape == (-1,)
    assert signature.batchable
    with pytest.raises(RejectedInputError, match="no signature 'other'"):
        await client(handler).get_signature(Target("fraud", signature="other"))
