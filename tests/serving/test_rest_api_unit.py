"""serving/rest_api.py without sockets: routing, bodies and JSON shapes, on fakes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from serving.metrics import Metrics
from serving.rest_api import RestApi, Route, parse_route
from tests.serving.fake_version import FakeManager, FakeVersion


@pytest.fixture
def api() -> RestApi:
    manager = FakeManager(FakeVersion(version=1), FakeVersion(version=3), labels={"stable": 1})
    return RestApi(manager, None, Metrics(dict), timeout_ms=30000)


async def request(api: RestApi, method: str, path: str, body: Any = b"") -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, text = await api.process(method, path, raw)
    return status, json.loads(text)


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("POST", "/v1/models/m:predict", Route("m", None, None, "predict")),
        ("POST", "/V1/Models/m/Versions/3:predict", Route("m", 3, None, "predict")),
        ("POST", "/v1/models/m/labels/can%20ary:regress", Route("m", None, "can ary", "regress")),
        ("GET", "/v1/models/m", Route("m", None, None, "")),
        ("GET", "/v1/models/m/versions/2/metadata", Route("m", 2, None, "metadata")),
        ("GET", "/v1/models", Route("", None, None, "")),
        ("GET", "/v1/models/m:predict", None),
        ("POST", "/v1/models/m", None),
        ("PUT", "/v1/models/m", None),
    ],
)
def test_routes(method: str, path: str, route: Route | None) -> None:
    assert parse_route(method, path) == route


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("POST", "/v1/models/m:explain", 400, "Malformed request: POST /v1/models/m:explain"),
        ("GET", "/v1/foo", 400, "Malformed request: GET /v1/foo"),
        ("DELETE", "/v1/models/m", 400, "Malformed request: DELETE /v1/models/m"),
        ("GET", "/v1/models", 400, "Missing model name in request."),
        ("GET", "/v1/models/nope", 404, "Could not find any versions of model nope"),
        ("GET", "/v1/models/m/versions/2", 404, "Could not find version 2 of model m"),
        ("POST", "/v1/models/nope:predict", 400, "JSON Parse error: The document is empty"),
        (
            "GET",
            "/v1/models/m/versions/99999999999999999999",
            400,
            "Failed to convert version: 99999999999999999999 to numeric.",
        ),
    ],
)
async def test_errors(api: RestApi, method: str, path: str, status: int, error: str) -> None:
    assert await request(api, method, path) == (status, {"error": error})


async def test_status_shape(api: RestApi) -> None:
    status, document = await request(api, "GET", "/v1/models/m")
    assert status == 200
    assert document == {
        "model_version_status": [
            {
                "version": "3",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            },
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            },
        ]
    }
    # a label does not narrow GetModelStatus
    assert (await request(api, "GET", "/v1/models/m/labels/stable"))[1] == document


async def test_metadata_shape(api: RestApi) -> None:
    status, document = await request(api, "GET", "/v1/models/m/labels/stable/metadata")
    assert status == 200
    assert document["model_spec"] == {"name": "m", "signature_name": "", "version": "1"}
    signature = document["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    # proto field names, enums by name; unset message fields (the fake has no
    # tensor_shape) are left out, as protobuf's printer does upstream too
    assert signature["inputs"]["x"] == {"dtype": "DT_FLOAT", "name": "serving_default_x:0"}
    assert signature["defaults"] == {}


async def test_predict_row_and_columnar(api: RestApi) -> None:
    status, document = await request(api, "POST", "/v1/models/m:predict", {"instances": [1, 2]})
    assert status == 200
    assert document == {"predictions": [{"y": 2.0, "z": 2.0}, {"y": 4.0, "z": 3.0}]}
    status, document = await request(
        api, "POST", "/v1/models/m/versions/1:predict", {"inputs": {"x": [1.5]}}
    )
    assert (status, document) == (200, {"outputs": {"y": [3.0], "z": [2.5]}})


async def test_predict_lookup_errors_come_after_parsing(api: RestApi) -> None:
    assert await request(api, "POST", "/v1/models/nope:predict", {"instances": [1]}) == (
        404,
        {"error": "Servable not found for request: Latest(nope)"},
    )
    assert await request(
        api, "POST", "/v1/models/m:predict", {"signature_name": "s", "instances": [1]}
    ) == (400, {"error": 'Serving signature name: "s" not found in signature def'})
    assert await request(api, "POST", "/v1/models/m/labels/x:predict", {"instances": [1]}) == (
        400,
        {"error": "Unrecognized servable version label: x"},
    )


async def test_gzip_is_not_this_layers_concern_but_bad_json_is(api: RestApi) -> None:
    status, document = await request(api, "POST", "/v1/models/m:predict", b"{nope")
    assert (status, document) == (
        400,
        {"error": "JSON Parse error: Missing a name for object member. at offset: 1"},
    )


async def test_classify_is_not_implemented(api: RestApi) -> None:
    body = {"examples": [{"x": 1}]}
    assert await request(api, "POST", "/v1/models/m:classify", body) == (
        501,
        {"error": "Classify is not implemented by this local TF Serving stand-in; use Predict"},
    )
    assert (await request(api, "POST", "/v1/models/nope:regress", body))[0] == 404
