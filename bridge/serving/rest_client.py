"""``ModelClient`` over TF Serving's REST API (one ``httpx.AsyncClient``).

Requests use the row format (``{"instances": [...]}``), one object per event.
TF Serving's REST predict response does not say which version served it, so
``Prediction.version`` is known only when the target pins a version number.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import httpx
import orjson

from bridge.domain import (
    DType,
    Instance,
    Prediction,
    Signature,
    Target,
    TensorSpec,
    dtype_from_name,
)
from bridge.errors import (
    DeadlineExceededError,
    ModelCallError,
    ModelServerError,
    RejectedInputError,
    ServerUnavailableError,
    error_for_http_status,
)
from bridge.serving.tensors import nest
from bridge.tracing import Metadata, outgoing


class RestModelClient:
    def __init__(
        self,
        base_url: str,
        timeout_s: float,
        connect_timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``transport``: httpx's own by default; tests pass an ``httpx.MockTransport``."""
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            # A sidecar on loopback: keep a few connections warm for requests in flight.
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
            transport=transport,
        )

    async def predict(
        self, target: Target, signature: Signature, instances: Sequence[Instance]
    ) -> Prediction:
        body = {
            "signature_name": target.signature,
            "instances": [_row(signature, instance) for instance in instances],
        }
        payload = await self._call(
            "POST", _path(target) + ":predict", content=orjson.dumps(body), trace=outgoing()
        )
        predictions = payload.get("predictions")
        if not isinstance(predictions, list) or len(predictions) != len(instances):
            got = len(predictions) if isinstance(predictions, list) else "no"
            raise ModelServerError(
                f"REST predict answered {got} predictions for {len(instances)} instances"
            )
        if len(signature.outputs) == 1:
            (only,) = signature.outputs
            outputs = [{only: value} for value in predictions]
        else:
            outputs = [dict(value) for value in predictions]
        return Prediction(target.version if target.label is None else None, outputs)

    async def get_signature(self, target: Target) -> Signature:
        payload = await self._call("GET", _path(target) + "/metadata")
        try:
            version_text = payload["model_spec"].get("version")
            signature_defs = payload["metadata"]["signature_def"]["signature_def"]
        except (KeyError, TypeError, AttributeError) as exc:
            raise ModelServerError(f"unexpected metadata JSON from {target}: {exc}") from exc
        if target.signature not in signature_defs:
            known = ", ".join(sorted(signature_defs))
            raise RejectedInputError(
                f"model {target} has no signature {target.signature!r} (it has: {known})",
                http_status=400,
            )
        definition = signature_defs[target.signature]
        return Signature(
            model=target.model,
            version=int(version_text) if version_text else None,
            name=target.signature,
            inputs=_specs(definition.get("inputs", {})),
            outputs=_specs(definition.get("outputs", {})),
        )

    async def is_ready(self, target: Target) -> bool:
        path = f"/v1/models/{target.model}"
        if target.version is not None:
            path += f"/versions/{target.version}"
        try:
            response = await self._client.get(path)
        except httpx.HTTPError:
            return False
        if response.status_code == 404:
            return True  # an answer: the server is up, the model is just not there
        if response.status_code != 200:
            return False
        statuses = orjson.loads(response.content).get("model_version_status", [])
        return any(status.get("state") == "AVAILABLE" for status in statuses)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(
        self, method: str, path: str, content: bytes | None = None, trace: Metadata | None = None
    ) -> dict[str, Any]:
        headers = {"content-type": "application/json"}
        if trace is not None:  # a traced predict: its traceparent, for the server or a proxy
            headers.update(trace)
        try:
            response = await self._client.request(method, path, content=content, headers=headers)
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise ServerUnavailableError(f"connect timeout: {exc}") from exc
            raise DeadlineExceededError(f"REST call timed out: {exc!r}", http_status=None) from exc
        except httpx.TransportError as exc:
            raise ServerUnavailableError(f"cannot reach the model server: {exc!r}") from exc
        try:
            payload = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            payload = {"error": response.text[:500]}
        if response.status_code != 200:
            raise _translate(response.status_code, payload)
        if not isinstance(payload, dict):
            raise ModelServerError(f"REST answered JSON {type(payload).__name__}, not an object")
        return payload


def _translate(status: int, payload: Any) -> ModelCallError:
    message = payload.get("error") if isinstance(payload, dict) else None
    return error_for_http_status(status, str(message or f"HTTP {status}"))


def _path(target: Target) -> str:
    path = f"/v1/models/{target.model}"
    if target.label is not None:
        return f"{path}/labels/{target.label}"
    if target.version is not None:
        return f"{path}/versions/{target.version}"
    return path


def _row(signature: Signature, instance: Instance) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name, spec in signature.inputs.items():
        leaves: list[Any] = instance.values[name]
        if spec.dtype is DType.STRING:
            # JSON strings must be text; TF Serving takes binary as {"b64": ...}.
            leaves = [{"b64": base64.b64encode(v).decode()} for v in leaves]
        row[name] = nest(leaves, instance.shapes[name]) if instance.shapes[name] else leaves[0]
    return row


def _specs(infos: dict[str, Any]) -> dict[str, TensorSpec]:
    specs: dict[str, TensorSpec] = {}
    for name in sorted(infos):
        info = infos[name]
        shape_info = info.get("tensor_shape", {})
        shape = (
            None
            if shape_info.get("unknown_rank")
            else tuple(int(dim["size"]) for dim in shape_info.get("dim", []))
        )
        specs[name] = TensorSpec(dtype_from_name(info["dtype"]), shape)
    return specs
