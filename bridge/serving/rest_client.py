"""``ModelClient`` over TF Serving's REST API (one httpx transport, its pool).

Requests use the columnar format (``{"inputs": {name: [...]}}``): one list per input,
its first dimension the batch, built in one pass per input instead of an object per
event (half the CPU of the row format's body for the demo's events, ~1.6 us an event).
TF Serving's REST predict response does not say which version served it, so
``Prediction.version`` is known only when the target pins a version number.

https: with ``BRIDGE_SERVING__SSL_*`` (``bridge.serving.tls``) the client trusts
only the CA file and can present a client certificate; TF Serving's REST port has
no TLS itself, so this is for a TLS terminator in front of it. A refused TLS
session is an unreachable server (the outage hold applies), logged once per
reason with a hint naming the setting to check, as the gRPC channel does.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import orjson
import structlog

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
from bridge.serving.tls import (
    CAFILE,
    CERTFILE,
    KEYFILE,
    REST_URL,
    TARGET_NAME,
    ServingTls,
    check_rest_url,
)
from bridge.tracing import Metadata, outgoing

log = structlog.get_logger(__name__)


class RestModelClient:
    def __init__(
        self,
        base_url: str,
        timeout_s: float,
        connect_timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
        tls: ServingTls | None = None,
    ) -> None:
        """``transport``: httpx's own by default; tests pass an ``httpx.MockTransport``.

        ``tls`` needs an https ``base_url``; a CA or key OpenSSL refuses raises
        ``ServingTlsError`` naming the setting (the settings check it at load too).
        """
        check_rest_url(base_url, tls)
        self.base_url = base_url.rstrip("/")
        self._tls = tls
        # SSL_TARGET_NAME means for REST what it means for gRPC: the name the server's
        # certificate must carry when it is not the URL's host (a terminator reached by
        # IP, or by a Service name its certificate does not list). httpx's sni_hostname
        # extension sends it as SNI and checks the certificate against it; the Host
        # header stays the URL's. Supporting it, rather than refusing it, lets an
        # operator switch PROTOCOL without touching the TLS settings.
        self._extensions: dict[str, Any] = (
            {"sni_hostname": tls.target_name} if tls is not None and tls.target_name else {}
        )
        self._unreachable: str | None = None  # the detail last logged, until an answer
        # The timeouts travel with each request, as httpx.AsyncClient would attach them.
        self._extensions["timeout"] = httpx.Timeout(timeout_s, connect=connect_timeout_s).as_dict()
        self._urls: dict[str, httpx.URL] = {}  # path -> parsed URL: a few paths, parsed once
        # The transport alone, not an httpx.AsyncClient around it: the client's layer
        # (URL merging, cookies, auth, redirects, event hooks) cost about 0.5 ms of CPU
        # per request, 8 us an event at batch 64, and does nothing for a sidecar. It
        # also means no proxy from HTTP(S)_PROXY: the model server is not on the web.
        self._transport: httpx.AsyncBaseTransport = transport or httpx.AsyncHTTPTransport(
            # No CA file: httpx's default trust store, for an https URL with a public CA.
            verify=tls.ssl_context() if tls is not None else True,
            # A sidecar on loopback: keep a few connections warm for requests in flight.
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )

    async def predict(
        self, target: Target, signature: Signature, instances: Sequence[Instance]
    ) -> Prediction:
        body = {"signature_name": target.signature, "inputs": _columns(signature, instances)}
        payload = await self._call(
            "POST", _path(target) + ":predict", content=orjson.dumps(body), trace=outgoing()
        )
        outputs = _rows(signature, payload.get("outputs"), len(instances))
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
            status, content = await self._send("GET", path)
        except (httpx.TransportError, ssl.SSLError) as exc:
            if not isinstance(exc, httpx.TimeoutException):
                self._log_unreachable(exc)
            return False
        except httpx.HTTPError:
            return False
        self._unreachable = None
        if status == 404:
            return True  # an answer: the server is up, the model is just not there
        if status != 200:
            return False
        statuses = orjson.loads(content).get("model_version_status", [])
        return any(status.get("state") == "AVAILABLE" for status in statuses)

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def _send(
        self,
        method: str,
        path: str,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """One request through the transport: the status and the whole body."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self.base_url + path)
        request = httpx.Request(
            method, url, headers=headers, content=content, extensions=self._extensions
        )
        response = await self._transport.handle_async_request(request)
        try:
            return response.status_code, await response.aread()
        finally:
            await response.aclose()  # back to the pool, or closed if it broke

    async def _call(
        self, method: str, path: str, content: bytes | None = None, trace: Metadata | None = None
    ) -> dict[str, Any]:
        headers = {"content-type": "application/json"}
        if trace is not None:  # a traced predict: its traceparent, for the server or a proxy
            headers.update(trace)
        try:
            status, body = await self._send(method, path, content, headers)
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise ServerUnavailableError(f"connect timeout: {exc}") from exc
            raise DeadlineExceededError(f"REST call timed out: {exc!r}", http_status=None) from exc
        except (httpx.TransportError, ssl.SSLError) as exc:
            # ssl.SSLError: httpcore wraps TLS errors of the handshake (ConnectError) but
            # not those read later, and TLS 1.3 servers refuse a client certificate (or
            # its absence) after the client's side of the handshake is done: the alert
            # arrives with the first read, as a bare SSLError.
            self._log_unreachable(exc)
            raise ServerUnavailableError(f"cannot reach the model server: {exc!r}") from exc
        self._unreachable = None
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            payload = {"error": body[:500].decode(errors="replace")}
        if status != 200:
            raise _translate(status, payload)
        if not isinstance(payload, dict):
            raise ModelServerError(f"REST answered JSON {type(payload).__name__}, not an object")
        return payload

    def _log_unreachable(self, exc: httpx.TransportError | ssl.SSLError) -> None:
        """Say why the server cannot be reached, once per distinct reason.

        To the outage hold a refused TLS session is the server being down; without
        this line the operator would see only model_server_down and never why.
        """
        detail = str(exc) or repr(exc)
        if detail == self._unreachable:
            return
        self._unreachable = detail
        hung_up = isinstance(exc, httpx.ReadError | httpx.RemoteProtocolError)
        hint = _unreachable_hint(detail, hung_up, self.base_url, self._tls)
        log.warning("model_server_unreachable", url=self.base_url, detail=detail, hint=hint)


def _unreachable_hint(detail: str, hung_up: bool, url: str, tls: ServingTls | None) -> str | None:
    """A hint naming the setting to check, from OpenSSL's reason (or None: no idea)."""
    lowered = detail.lower()
    if "certificate_verify_failed" in lowered:
        return (
            f"the server's certificate is not trusted: {CAFILE} must hold the CA that signed "
            f"it (unset: httpx's default CAs) and the certificate must name the host of "
            f"{REST_URL} (or {TARGET_NAME})"
        )
    if "wrong_version_number" in lowered or "wrong version number" in lowered:
        return f"no TLS at this port: {REST_URL} must be the TLS terminator's https address"
    if not url.lower().startswith("https://"):
        # A TLS server hangs up on a plain HTTP request without a word.
        return (
            f"a TLS server closes plain HTTP connections: is {REST_URL} https?" if hung_up else None
        )
    if "certificate required" in lowered:  # TLS 1.3's alert for a missing client certificate
        return f"the server requires a client certificate (mTLS): set {CERTFILE} and {KEYFILE}"
    if "alert" in lowered or "handshake failure" in lowered:
        if tls is not None and tls.certfile is not None:
            return (
                f"the server refused the client certificate of {CERTFILE} (the alert says why: "
                "expired, signed by a CA it does not trust)"
            )
        return (
            "the server refused the TLS session (the alert says why); one that requires "
            f"client certificates needs {CERTFILE} and {KEYFILE}"
        )
    if hung_up:  # closed without an alert: some terminators refuse a session that way
        return (
            "the server closed the connection: if it requires client certificates, check "
            f"{CERTFILE} and {KEYFILE}"
        )
    return None


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


def _columns(signature: Signature, instances: Sequence[Instance]) -> dict[str, list[Any]]:
    """Per input, its values for every instance: TF Serving's columnar ``inputs``."""
    first = instances[0]
    # The builder shares one shapes dict between instances of a signature whose inputs
    # are all scalars or fixed-length lists: then one check per input, not per instance.
    # Otherwise each instance nests by its own shapes (a ragged batch the server
    # refuses and the bridge bisects, as it would ragged rows).
    shared = all(instance.shapes is first.shapes for instance in instances)
    columns: dict[str, list[Any]] = {}
    for name, spec in signature.inputs.items():
        column: list[Any] = [instance.values[name] for instance in instances]
        if spec.dtype is DType.STRING:
            # JSON strings must be text; TF Serving takes binary as {"b64": ...}.
            column = [[{"b64": base64.b64encode(v).decode()} for v in leaves] for leaves in column]
        shape = first.shapes[name]
        if shared and len(shape) <= 1:
            if not shape:
                column = [leaves[0] for leaves in column]
            # else: flat lists are their own JSON, no per-leaf pass
        else:
            column = [
                _value(leaves, instance.shapes[name])
                for leaves, instance in zip(column, instances, strict=True)
            ]
        columns[name] = column
    return columns


def _value(leaves: list[Any], shape: tuple[int, ...]) -> Any:
    if not shape:
        return leaves[0]
    if len(shape) == 1:
        return leaves
    return nest(leaves, shape)


def _rows(signature: Signature, outputs: Any, count: int) -> list[dict[str, Any]]:
    """The columnar answer, split per instance (TF Serving: one output's is bare)."""
    names = list(signature.outputs)
    if len(names) == 1 and not isinstance(outputs, dict):
        outputs = {names[0]: outputs}
    if not isinstance(outputs, dict) or set(outputs) != set(names):
        keys = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
        raise ModelServerError(f"REST predict answered outputs {keys}, not {sorted(names)}")
    columns = [outputs[name] for name in names]
    for name, column in zip(names, columns, strict=True):
        if not isinstance(column, list) or len(column) != count:
            length = len(column) if isinstance(column, list) else "no"
            raise ModelServerError(
                f"REST predict answered {length} values of {name!r} for {count} instances"
            )
    if len(names) == 1:
        return [{names[0]: value} for value in columns[0]]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


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
