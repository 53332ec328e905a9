"""The REST API of ``python -m serving`` over plain HTTP (httpx).

Shares the session's ``api_server`` with test_grpc_api.py: ``toy`` (y = x * version,
versions 1 and 2, labels stable=1 and canary=2) and ``multi`` (float/int64/string
inputs). Metrics are enabled on that server.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.serving.server_process import (  # noqa: F401 (api_server is a fixture)
    METRICS_PATH,
    ServerProcess,
    api_server,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def http(api_server: ServerProcess) -> Iterator[httpx.Client]:  # noqa: F811
    with httpx.Client(base_url=api_server.rest_url, timeout=60) as client:
        yield client


def predict(http: httpx.Client, path: str, body: Any) -> tuple[int, Any]:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = http.post(path, content=content)
    return response.status_code, response.json()


# -- status and metadata ------------------------------------------------------------------


def test_status_shape(http: httpx.Client) -> None:
    response = http.get("/v1/models/toy")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    ok = {"error_code": "OK", "error_message": ""}
    assert response.json() == {
        "model_version_status": [
            {"version": "2", "state": "AVAILABLE", "status": ok},
            {"version": "1", "state": "AVAILABLE", "status": ok},
        ]
    }
    one = http.get("/v1/models/toy/versions/1").json()
    assert [v["version"] for v in one["model_version_status"]] == ["1"]


def test_metadata_shape(http: httpx.Client) -> None:
    response = http.get("/v1/models/toy/labels/stable/metadata")
    assert response.status_code == 200
    document = response.json()
    assert document["model_spec"] == {"name": "toy", "signature_name": "", "version": "1"}
    signatures = document["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "negate"} <= set(signatures)
    serving_default = signatures["serving_default"]
    assert serving_default["method_name"] == "tensorflow/serving/predict"
    x = serving_default["inputs"]["x"]
    assert x["dtype"] == "DT_FLOAT"
    assert x["tensor_shape"] == {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False}
    assert http.get("/v1/models/toy/versions/2/metadata").json()["model_spec"]["version"] == "2"


def test_paths_are_case_insensitive(http: httpx.Client) -> None:
    assert http.get("/V1/MODELS/toy").status_code == 200
    assert predict(http, "/v1/Models/toy/Versions/1:predict", {"instances": [1]}) == (
        200,
        {"predictions": [1.0]},
    )


# -- predict -------------------------------------------------------------------------------


def test_row_format_versions_and_labels(http: httpx.Client) -> None:
    assert predict(http, "/v1/models/toy:predict", {"instances": [1, 2.5]}) == (
        200,
        {"predictions": [2.0, 5.0]},
    )
    assert predict(http, "/v1/models/toy/versions/1:predict", {"instances": [1]}) == (
        200,
        {"predictions": [1.0]},
    )
    assert predict(http, "/v1/models/toy/labels/canary:predict", {"instances": [1]}) == (
        200,
        {"predictions": [2.0]},
    )
    negate = {"signature_name": "negate", "instances": [1]}
    assert predict(http, "/v1/models/toy/labels/stable:predict", negate) == (
        200,
        {"predictions": [-1.0]},
    )


def test_nan_and_infinity_round_trip(http: httpx.Client) -> None:
    body = b'{"instances": [NaN, Infinity, -Infinity, 1]}'
    response = http.post("/v1/models/toy/versions/1:predict", content=body)
    assert response.status_code == 200
    assert "NaN" in response.text
    values = json.loads(response.text)["predictions"]  # Python's json reads NaN too
    assert math.isnan(values[0])
    assert values[1:] == [math.inf, -math.inf, 1.0]


def test_columnar_format_and_b64(http: httpx.Client) -> None:
    body = {
        "inputs": {
            "a": [[1, 1], [0, 1]],
            "n": [1, 2],
            "s": [{"b64": base64.b64encode(b"abc").decode()}, "d\u00e9f"],
        }
    }
    status, document = predict(http, "/v1/models/multi:predict", body)
    assert status == 200
    assert document == {
        "outputs": {"n_plus_version": [2, 3], "score": [3.0, 2.0], "shout": ["ABC", "DéF"]}
    }


def test_row_format_objects_for_several_inputs(http: httpx.Client) -> None:
    body = {"instances": [{"a": [1, 0], "n": 7, "s": "x"}, {"a": [0, 1], "n": 8, "s": "y"}]}
    assert predict(http, "/v1/models/multi:predict", body) == (
        200,
        {
            "predictions": [
                {"n_plus_version": 8, "score": 1.0, "shout": "X"},
                {"n_plus_version": 9, "score": 2.0, "shout": "Y"},
            ]
        },
    )


def test_gzip_request_body(http: httpx.Client) -> None:
    body = gzip.compress(json.dumps({"instances": [3]}).encode())
    response = http.post(
        "/v1/models/toy:predict", content=body, headers={"Content-Encoding": "gzip"}
    )
    assert (response.status_code, response.json()) == (200, {"predictions": [6.0]})


def test_large_body(http: httpx.Client) -> None:
    values = list(range(600_000))  # about 5 MB of JSON
    body = json.dumps({"inputs": values}).encode()
    assert len(body) > 4 * 2**20
    status, document = predict(http, "/v1/models/toy/versions/1:predict", body)
    assert status == 200
    assert document["outputs"][-1] == float(values[-1])


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        (
            "POST",
            "/v1/models/toy:explain",
            b"",
            400,
            "Malformed request: POST /v1/models/toy:explain",
        ),
        ("GET", "/v1/nothing", b"", 400, "Malformed request: GET /v1/nothing"),
        ("GET", "/v1/models", b"", 400, "Missing model name in request."),
        ("GET", "/v1/models/nope", b"", 404, "Could not find any versions of model nope"),
        ("GET", "/v1/models/toy/versions/7", b"", 404, "Could not find version 7 of model toy"),
        ("POST", "/v1/models/nope:predict", b"", 400, "JSON Parse error: The document is empty"),
        (
            "POST",
            "/v1/models/toy:predict",
            b"[1,",
            400,
            "JSON Parse error: Invalid value. at offset: 3",
        ),
        (
            "POST",
            "/v1/models/nope:predict",
            b'{"instances": [1]}',
            404,
            "Servable not found for request: Latest(nope)",
        ),
        (
            "POST",
            "/v1/models/toy/versions/9:predict",
            b'{"instances": [1]}',
            404,
            "Servable not found for request: Specific(toy, 9)",
        ),
        (
            "POST",
            "/v1/models/toy/labels/beta:predict",
            b'{"instances": [1]}',
            400,
            "Unrecognized servable version label: beta",
        ),
        (
            "POST",
            "/v1/models/toy:predict",
            b'{"signature_name": "nope", "instances": [1]}',
            400,
            'Serving signature name: "nope" not found in signature def',
        ),
        (
            "POST",
            "/v1/models/toy:predict",
            b'{"instances": ["x"]}',
            400,
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            'JSON Value: "x" Type: String is not of expected type: float',
        ),
        (
            "POST",
            "/v1/models/toy:predict",
            b'{"inputs": {"b64": "AAAA"}}',
            400,
            'JSON Value: {\n    "b64": "AAAA"\n} Type: Object is not of expected type: float',
        ),
        ("POST", "/v1/models/toy:predict", b'{"x": 1}', 400, "Missing 'inputs' or 'instances' key"),
    ],
)
def test_errors(
    http: httpx.Client, method: str, path: str, body: bytes, status: int, error: str
) -> None:
    response = http.request(method, path, content=body)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"error": error}


def test_runtime_error_is_400(http: httpx.Client) -> None:
    body = {"instances": [{"a": [1, 2, 3], "n": 1, "s": "x"}]}
    status, document = predict(http, "/v1/models/multi:predict", body)
    assert status == 400
    assert "Matrix size-incompatible" in document["error"]


def test_classify_and_regress_are_not_implemented(http: httpx.Client) -> None:
    body = {"examples": [{"x": 1.0}]}
    status, document = predict(http, "/v1/models/toy:classify", body)
    assert status == 501
    assert "not implemented" in document["error"]
    status, _ = predict(http, "/v1/models/nope:regress", body)
    assert status == 404


def test_paths_outside_v1_are_not_found(http: httpx.Client) -> None:
    assert http.get("/v2/models/toy").status_code == 404


# -- metrics --------------------------------------------------------------------------------


def test_metrics_page(http: httpx.Client) -> None:
    assert predict(http, "/v1/models/toy:predict", {"instances": [1]})[0] == 200
    assert predict(http, "/v1/models/nope:predict", {"instances": [1]})[0] == 404
    response = http.get(METRICS_PATH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    page = response.text
    for line in (
        "# TYPE :tensorflow:serving:request_count counter",
        ':tensorflow:serving:request_count{model_name="nope",status="NOT_FOUND"}',
        "# TYPE :tensorflow:serving:request_latency histogram",
        ':tensorflow:serving:request_latency_bucket{model_name="toy",API="Predict",'
        'entrypoint="REST",le="+Inf"}',
        "# TYPE :tensorflow:serving:runtime_latency histogram",
        "# TYPE :tensorflow:cc:saved_model:load_attempt_count counter",
        'status="success"}',
    ):
        assert line in page, line
    ok = [
        line
        for line in page.splitlines()
        if line.startswith(':tensorflow:serving:request_count{model_name="toy",status="OK"}')
    ]
    assert ok and int(ok[0].split()[-1]) >= 1
