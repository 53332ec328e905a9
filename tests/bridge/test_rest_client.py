"""The REST client against TF Serving's REST API, through httpx's MockTransport (no sockets):
the requests it makes, and how each kind of answer becomes a prediction or an error; with
TLS, the SSLContext it gives httpx, the target name on each request, and TLS refusals."""

from __future__ import annotations

import base64
import contextlib
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import structlog

from bridge.domain import DType, Instance, Signature, Target, TensorSpec
from bridge.errors import (
    DeadlineExceededError,
    ModelNotFoundError,
    ModelServerError,
    RejectedInputError,
    ServerUnavailableError,
)
from bridge.pipeline.instances import InstanceBuilder
from bridge.serving.rest_client import RestModelClient
from bridge.serving.tls import ServingTls, ServingTlsError

from .signatures import FRAUD, MIXED, fraud_event

Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler) -> RestModelClient:
    return RestModelClient("http://sidecar:8501/", 1.0, 0.5, transport=httpx.MockTransport(handler))


def instances(count: int) -> list[Instance]:
    builder = InstanceBuilder(FRAUD)
    return [builder.build(fraud_event(amount=float(i))) for i in range(count)]


async def test_predict_posts_columns_to_the_label_route_and_splits_the_outputs() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        amounts = orjson.loads(request.content)["inputs"]["amount"]
        flagged = [a > 1 for a in amounts]
        outputs = {"flagged": flagged, "fraud_probability": [a / 10 for a in amounts]}
        return httpx.Response(200, json={"outputs": outputs})

    rest = client(handler)
    prediction = await rest.predict(Target("fraud", label="canary"), FRAUD, instances(3))
    await rest.aclose()
    (request,) = seen
    assert request.method == "POST"
    assert request.url.path == "/v1/models/fraud/labels/canary:predict"
    body = orjson.loads(request.content)
    assert body["signature_name"] == "serving_default"
    assert body["inputs"]["amount"] == [0.0, 1.0, 2.0]
    assert [len(pca) for pca in body["inputs"]["pca"]] == [28, 28, 28]
    assert [o["flagged"] for o in prediction.outputs] == [False, False, True]
    assert [o["fraud_probability"] for o in prediction.outputs] == [0.0, 0.1, 0.2]
    assert prediction.version is None  # a label: REST does not say which version served


async def test_a_pinned_version_is_the_served_version() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/models/fraud/versions/2:predict"
        return httpx.Response(200, json={"outputs": {"fraud_probability": [0.1], "flagged": [0]}})

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


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        ({"fraud_probability": [0.1], "flagged": [0, 1]}, "1 values of 'fraud_probability' for 2"),
        ({"fraud_probability": [0.1, 0.2]}, r"outputs \['fraud_probability'\], not"),
        ([0.1, 0.2], "outputs list, not"),
        (None, "outputs NoneType, not"),
    ],
)
async def test_a_short_answer_is_a_server_error_not_a_misaligned_result(
    outputs: object, expected: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"outputs": outputs})

    with pytest.raises(ModelServerError, match=expected):
        await client(handler).predict(Target("fraud"), FRAUD, instances(2))


async def test_strings_go_as_b64_inner_dims_nest_and_one_output_may_be_bare() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(orjson.loads(request.content)["inputs"])
        return httpx.Response(200, json={"outputs": [0.5, 0.25]})  # one output: its list

    builder = InstanceBuilder(MIXED)
    events = [
        {"count": 1, "flag": True, "text": "héllo", "grid": [[1.0, 2.0]]},
        {"count": 2, "flag": False, "text": "b", "grid": [[5.0, 6.0], [7.0, 8.0]]},
    ]
    batch = [builder.build(event) for event in events]
    prediction = await client(handler).predict(Target("mixed"), MIXED, batch)
    (inputs,) = seen
    assert inputs["count"] == [1, 2]
    assert inputs["flag"] == [True, False]
    assert [base64.b64decode(v["b64"]) for v in inputs["text"]] == ["héllo".encode(), b"b"]
    # Inner dims vary per event: each instance nests by its own shape.
    assert inputs["grid"] == [[[1.0, 2.0]], [[5.0, 6.0], [7.0, 8.0]]]
    assert prediction.outputs == [{"y": 0.5}, {"y": 0.25}]


async def test_fixed_inner_dims_nest_per_instance() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(orjson.loads(request.content)["inputs"])
        return httpx.Response(200, json={"outputs": [0.5, 0.25]})

    square = Signature(
        model="square",
        version=1,
        name="serving_default",
        inputs={"m": TensorSpec(DType.FLOAT, (-1, 2, 2))},
        outputs={"y": TensorSpec(DType.FLOAT, (-1,))},
    )
    builder = InstanceBuilder(square)
    batch = [
        builder.build({"m": [[1.0, 2.0], [3.0, 4.0]]}),
        builder.build({"m": [[5.0, 6.0], [7.0, 8.0]]}),
    ]
    await client(handler).predict(Target("square"), square, batch)
    assert seen == [{"m": [[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]]}]


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


# -- https (BRIDGE_SERVING__SSL_*) ----------------------------------------------

CERTS = Path(__file__).parent / "tls_certs"  # the Kafka TLS unit tests' throwaway files
MTLS = ServingTls(CERTS / "test-ca.pem", CERTS / "client.pem", CERTS / "client.key")


def _recorded_client_options(
    monkeypatch: pytest.MonkeyPatch, url: str, tls: ServingTls | None
) -> dict[str, Any]:
    """The options RestModelClient gives httpx's transport (the real one still builds)."""
    seen: dict[str, Any] = {}

    class Recording(httpx.AsyncHTTPTransport):
        def __init__(self, **options: Any) -> None:
            seen.update(options)
            super().__init__(**options)

    monkeypatch.setattr(httpx, "AsyncHTTPTransport", Recording)
    RestModelClient(url, 1.0, 0.5, tls=tls)
    return seen


def test_with_tls_the_client_verifies_with_the_ca_and_carries_the_certificate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    verify = _recorded_client_options(monkeypatch, "https://tfs.test:8443", MTLS)["verify"]
    assert isinstance(verify, ssl.SSLContext)
    assert verify.verify_mode == ssl.CERT_REQUIRED
    assert verify.check_hostname
    # Only the CA file is trusted, not the default store besides it.
    assert [c["subject"] for c in verify.get_ca_certs()] == [((("commonName", "test-ca"),),)]


def test_without_tls_an_https_url_keeps_httpx_default_trust(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _recorded_client_options(monkeypatch, "https://tfs.example:443", None)["verify"] is True


def test_tls_with_a_plain_http_url_is_refused_naming_both_settings() -> None:
    with pytest.raises(ServingTlsError) as caught:
        RestModelClient("http://sidecar:8501", 1.0, 0.5, tls=MTLS)
    assert "BRIDGE_SERVING__SSL_CAFILE" in str(caught.value)
    assert "BRIDGE_SERVING__REST_URL" in str(caught.value)


@pytest.mark.parametrize("target_name", [None, "model-server.test"])
async def test_the_target_name_is_the_sni_and_checked_name_of_every_request(
    target_name: str | None,
) -> None:
    seen: list[object] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions.get("sni_hostname"))
        if request.url.path.endswith(":predict"):
            return httpx.Response(200, json={"outputs": {"fraud_probability": [0.1]}})
        return httpx.Response(200, json={"model_version_status": [{"state": "AVAILABLE"}]})

    tls = ServingTls(MTLS.cafile, target_name=target_name)
    rest = RestModelClient(
        "https://10.0.0.7:8443", 1.0, 0.5, transport=httpx.MockTransport(handler), tls=tls
    )
    assert await rest.is_ready(Target("fraud"))
    with contextlib.suppress(ModelServerError):  # one output of two: only the request counts
        await rest.predict(Target("fraud"), FRAUD, instances(1))
    await rest.aclose()
    assert seen == [target_name, target_name]


async def test_a_tls_alert_after_the_handshake_is_an_unreachable_server_said_once() -> None:
    # TLS 1.3: a server that wants a client certificate refuses it after the client's
    # handshake is done; the alert comes with the first read, as a bare ssl.SSLError.
    def handler(request: httpx.Request) -> httpx.Response:
        raise ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] certificate required")

    tls = ServingTls(MTLS.cafile)
    rest = RestModelClient(
        "https://tfs:8443", 1.0, 0.5, transport=httpx.MockTransport(handler), tls=tls
    )
    with structlog.testing.capture_logs() as logs:
        assert not await rest.is_ready(Target("fraud"))
        with pytest.raises(ServerUnavailableError):
            await rest.predict(Target("fraud"), FRAUD, instances(1))
        assert not await rest.is_ready(Target("fraud"))
    unreachable = [entry for entry in logs if entry["event"] == "model_server_unreachable"]
    assert len(unreachable) == 1, logs  # once per reason, not per probe
    assert "BRIDGE_SERVING__SSL_CERTFILE" in unreachable[0]["hint"]


@pytest.mark.parametrize(
    ("detail", "url", "tls", "setting"),
    [
        (
            "[SSL: CERTIFICATE_VERIFY_FAILED] unable to get local issuer",
            "https://h",
            None,
            "SSL_CAFILE",
        ),
        ("[SSL: WRONG_VERSION_NUMBER] wrong version number", "https://h", MTLS, "REST_URL"),
        ("[SSL: SSLV3_ALERT_CERTIFICATE_EXPIRED] expired", "https://h", MTLS, "SSL_CERTFILE"),
    ],
)
async def test_the_hint_names_the_setting_to_check(
    detail: str, url: str, tls: ServingTls | None, setting: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(detail)

    rest = RestModelClient(url, 1.0, 0.5, transport=httpx.MockTransport(handler), tls=tls)
    with structlog.testing.capture_logs() as logs:
        assert not await rest.is_ready(Target("fraud"))
    (entry,) = [e for e in logs if e["event"] == "model_server_unreachable"]
    assert f"BRIDGE_SERVING__{setting}" in entry["hint"]
