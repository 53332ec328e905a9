"""The REST front end on aiohttp: TF Serving's /v1/ routes and the metrics page.

Routing follows ``http_rest_api_util.cc``: the raw path is matched (case-insensitive)
against the predict and status/metadata patterns; anything else under ``/v1/`` is
``Malformed request: METHOD PATH``, and paths outside ``/v1/`` are 404. As upstream,
the body is parsed before the model is looked up. Errors are ``{"error": message}``
with the HTTP status of the error's gRPC code.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from aiohttp import web
from google.protobuf import json_format, message
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from serving import predict
from serving.errors import ServingError
from serving.grpc_api import (
    SIGNATURE_DEF_FIELD,
    Manager,
    classify_or_regress,
    model_metadata,
    model_status,
)
from serving.metrics import Metrics
from serving.tensors import (
    json_to_inputs,
    outputs_to_json,
    parse_json_object,
    signature_name_of,
)

_API_PATH = re.compile(r"/v1/.*", re.IGNORECASE)
_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
# Bodies above this are parsed and encoded in a worker thread, off the event loop.
_OFFLOAD_BYTES = 64 * 1024
# Upstream reads whatever the client sends; aiohttp needs a bound.
MAX_BODY_BYTES = 2**31 - 1

_T = TypeVar("_T")


def _invalid(message_text: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message_text)


@dataclass(frozen=True)
class Route:
    """What the path names: the model, an optional version or label, the verb."""

    model_name: str
    version: int | None
    label: str | None
    verb: str  # predict/classify/regress, or metadata/"" for GET

    def model_spec(self, signature_name: str = "") -> model_pb2.ModelSpec:
        spec = model_pb2.ModelSpec(name=self.model_name, signature_name=signature_name)
        if self.version is not None:
            spec.version.value = self.version
        if self.label is not None:
            spec.version_label = self.label
        return spec


def parse_route(method: str, path: str) -> Route | None:
    """Upstream's ParseModelInfo; None when the path matches no route for the method."""
    if method == "POST":
        match = _PREDICT_PATH.fullmatch(path)
    elif method == "GET":
        match = _STATUS_PATH.fullmatch(path)
    else:
        return None
    if match is None:
        return None
    name, version_text, label, verb = match.groups()
    version = None
    if version_text:
        version = int(version_text)
        if version >= 2**63:
            raise _invalid(f"Failed to convert version: {version_text} to numeric.")
    return Route(
        model_name=urllib.parse.unquote(name or ""),
        version=version,
        label=urllib.parse.unquote(label) if label else None,
        verb=verb or "",
    )


def _json(message_obj: message.Message, *, field_names: bool = False) -> Any:
    return json_format.MessageToDict(
        message_obj,
        always_print_fields_with_no_presence=True,
        preserving_proto_field_name=field_names,
    )


class RestApi:
    """Request handling, independent of aiohttp so it can be tested without sockets."""

    def __init__(
        self,
        manager: Manager,
        batcher: predict.Batcher | None,
        metrics: Metrics,
        *,
        timeout_ms: int,
    ) -> None:
        self._manager = manager
        self._batcher = batcher
        self._metrics = metrics
        self._run_timeout = timeout_ms / 1000 if timeout_ms > 0 else None

    async def process(self, method: str, path: str, body: bytes) -> tuple[int, str]:
        """(HTTP status, JSON body) for a request under /v1/."""
        try:
            return 200, await self._dispatch(method, path, body)
        except ServingError as exc:
            return exc.http_status, json.dumps({"error": exc.message}, ensure_ascii=False)

    async def _dispatch(self, method: str, path: str, body: bytes) -> str:
        route = parse_route(method, path)
        # Upstream compares the verb case-sensitively after a case-insensitive match.
        if route is not None and method == "POST" and route.verb == "predict":
            return await self._predict(route, body)
        if route is not None and method == "POST" and route.verb in ("classify", "regress"):
            return await self._classify_or_regress(route, body)
        if route is not None and method == "GET":
            if not route.model_name:
                raise _invalid("Missing model name in request.")
            if route.verb == "metadata":
                return self._metadata(route)
            return self._status(route)
        raise _invalid(f"Malformed request: {method} {path}")

    def _status(self, route: Route) -> str:
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=route.model_spec())
        return json.dumps(_json(model_status(self._manager, request)), indent=1)

    def _metadata(self, route: Route) -> str:
        response = model_metadata(self._manager, route.model_spec(), [SIGNATURE_DEF_FIELD])
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata[SIGNATURE_DEF_FIELD].Unpack(signatures)
        # Upstream prints the two parts separately, with proto field names.
        document = {
            "model_spec": _json(response.model_spec, field_names=True),
            "metadata": {SIGNATURE_DEF_FIELD: _json(signatures, field_names=True)},
        }
        return json.dumps(document, indent=1)

    async def _offload(self, size: int, function: Callable[..., _T], *args: Any) -> _T:
        if size > _OFFLOAD_BYTES:
            return await asyncio.to_thread(function, *args)
        return function(*args)

    async def _predict(self, route: Route, body: bytes) -> str:
        start = time.perf_counter()
        name = route.model_name
        try:
            text, runtime = await self._run_predict(route, body)
        except ServingError as exc:
            self._metrics.record_request(name, exc.code.name)
            raise
        self._metrics.record_request(name, "OK")
        self._metrics.record_runtime_latency(name, "Predict", runtime)
        micros = (time.perf_counter() - start) * 1e6
        self._metrics.record_request_latency(name, "Predict", "REST", micros)
        return text

    async def _run_predict(self, route: Route, body: bytes) -> tuple[str, int]:
        doc = await self._offload(len(body), parse_json_object, body)
        signature_name = signature_name_of(doc)
        version = self._manager.resolve(route.model_spec(signature_name))
        with version.in_flight():
            signature = predict.find_signature(version, signature_name, rest=True)
            dtypes = predict.input_dtypes(signature)
            fmt, inputs = await self._offload(
                len(body), json_to_inputs, doc, dtypes, signature_name
            )
            predict.check_inputs(signature, list(inputs))
            output_keys = predict.check_output_filter(signature, [])
            call = predict.Call(predict.signature_key(signature_name), inputs, output_keys)
            result = await predict.run(
                version, call, batcher=self._batcher, run_timeout=self._run_timeout
            )
        size = sum(a.nbytes for a in result.outputs.values())
        text = await self._offload(size, outputs_to_json, result.outputs, fmt)
        return text, result.runtime_micros

    async def _classify_or_regress(self, route: Route, body: bytes) -> str:
        doc = parse_json_object(body)
        spec = route.model_spec(signature_name_of(doc))
        try:
            classify_or_regress(self._manager, spec, route.verb.capitalize())
        except ServingError as exc:
            self._metrics.record_request(route.model_name, exc.code.name)
            raise
        raise AssertionError("classify_or_regress always raises")  # pragma: no cover


def build_app(api: RestApi, metrics: Metrics, metrics_path: str | None) -> web.Application:
    """The aiohttp application: the metrics page (when enabled) and everything /v1/."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.rel_url.raw_path
        if metrics_path is not None and path == metrics_path:
            return web.Response(text=metrics.render(), content_type="text/plain")
        if not _API_PATH.fullmatch(path):
            raise web.HTTPNotFound()
        # aiohttp undoes Content-Encoding: gzip/deflate itself, as upstream's server does.
        body = await request.read()
        status, text = await api.process(request.method, path, body)
        # "replace": invalid UTF-8 a client sent may be quoted back in an error message.
        payload = text.encode("utf-8", "replace")
        return web.Response(status=status, body=payload, content_type="application/json")

    app.router.add_route("*", "/{tail:.*}", handle)
    return app
