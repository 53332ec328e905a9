"""The one gRPC channel to TF Serving: its options, its stubs, and its error translation.

Both clients on it, ``GrpcModelClient`` (PredictionService, the bridge's calls)
and ``ModelServiceClient`` (ModelService, the operator commands'), call through
``GrpcChannel.call``: every call has a deadline, and a failed one raises the
``bridge.errors`` class for its ``grpc.StatusCode``, ``from`` the original.

gRPC's own retries are off (the pipeline retries with backoff, so attempts do not
multiply), and the message size limits are raised from gRPC's 4 MB default.

When to reconnect after an outage is the bridge's call, not gRPC's. With gRPC's
default connection backoff (1 s x 1.6 per failure, up to 120 s), a channel refused
for 30 s next tries to connect up to ~10 s after the server is back, and until
then every call fails at once. The probe's short backoff did not help: is_ready
took 6-11 s after 30-60 s outages. The sidecar is on loopback, where a refused
connect costs nothing, so the channel retries at least once a second, and
``connect`` asks a channel that is not connected to connect and waits, up to a
bound (tests/integration/test_grpc_channel.py, tests/integration/test_resume.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio
import structlog

from bridge.errors import ModelCallError, error_for_grpc_status
from bridge.serving.tls import ServingTls
from bridge.tracing import Metadata
from bridge.wire import model_service_pb2_grpc, prediction_service_pb2_grpc

# Connection backoff on loopback: first retry after 0.5 s, then at most every 1 s
# (gRPC adds +-20% jitter). The connect timeout (grpc.min_reconnect_backoff_ms,
# 20 s) stays: a refused connect fails at once anyway, and a slow handshake with a
# server that is starting is not cut short and retried.
RECONNECT_INITIAL_MS = 500
RECONNECT_MAX_MS = 1_000
# How long a probe waits for a channel that is not connected to connect: longer
# than one reconnect interval (with jitter), so a waiting probe sees an attempt.
PROBE_CONNECT_WAIT_S = 1.5
_CONNECT_POLL_S = 0.02

log = structlog.get_logger(__name__)

_Response = TypeVar("_Response")
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.enable_retries", 0),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Notice a dead sidecar on an idle channel without waiting for TCP.
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_INITIAL_MS),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS),
    ]


def status_code(number: int) -> grpc.StatusCode:
    """TF Serving's error codes (``error_codes.proto``) are gRPC's, by number."""
    return _BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def error_for(code: grpc.StatusCode, message: str) -> ModelCallError:
    """The ``bridge.errors`` class for a status: the one translation of gRPC's codes."""
    return error_for_grpc_status(code.name, message or code.name)


def _open_channel(
    target: str, options: list[tuple[str, Any]], tls: ServingTls | None
) -> grpc.aio.Channel:
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options)
    ca, chain, key = tls.pem()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=chain
    )
    if tls.target_name:
        options = [*options, ("grpc.ssl_target_name_override", tls.target_name)]
    return grpc.aio.secure_channel(target, credentials, options=options)


def _unreachable_hint(detail: str, tls: ServingTls | None) -> str | None:
    lowered = detail.lower()
    if "handshake" in lowered:
        return (
            "TLS handshake failure: check that BRIDGE_SERVING__SSL_CAFILE holds the CA of the "
            "server's certificate and that the certificate names the target "
            "(or BRIDGE_SERVING__SSL_TARGET_NAME)"
        )
    if "socket closed" not in lowered:
        return None
    # The server hung up during connect: what TLS servers do to clients they refuse.
    if tls is None:
        return "a TLS-only server closes plaintext connections: set BRIDGE_SERVING__SSL_CAFILE"
    if tls.certfile is None:
        return (
            "TLS handshake failure likely: a server that requires client certificates "
            "(TF Serving's client_verify) closes the connection of a client without one: "
            "set BRIDGE_SERVING__SSL_CERTFILE and BRIDGE_SERVING__SSL_KEYFILE"
        )
    return "TLS handshake failure likely: the server refused the client certificate"


class GrpcChannel:
    """One channel and its two stubs; ``call`` gives each call its deadline."""

    def __init__(
        self, target: str, timeout_s: float, max_message_bytes: int, tls: ServingTls | None = None
    ) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._channel = _open_channel(target, channel_options(max_message_bytes), tls)
        self._tls = tls
        self._unreachable: str | None = None  # the detail last logged, until a call succeeds
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    async def call(
        self,
        method: Callable[..., Awaitable[_Response]],
        request: Any,
        timeout_s: float | None = None,
        metadata: Metadata | None = None,
    ) -> _Response:
        try:
            response = await method(request, timeout=timeout_s or self.timeout_s, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                self._log_unreachable(exc.details() or "")
            raise error_for(exc.code(), exc.details() or "") from exc
        self._unreachable = None
        return response

    def _log_unreachable(self, detail: str) -> None:
        """Say why the server cannot be reached, once per distinct reason.

        The outage hold only says the server is down; a TLS mistake looks the same
        to it, and would otherwise be found only by reading gRPC's own debug logs.
        """
        if detail == self._unreachable:
            return
        self._unreachable = detail
        hint = _unreachable_hint(detail, self._tls)
        log.warning("model_server_unreachable", target=self.target, detail=detail, hint=hint)

    async def connect(self, within_s: float) -> bool:
        """Ask the channel to connect now and wait up to ``within_s`` for it; True if READY.

        A call that is not ``wait_for_ready`` fails at once while the channel waits
        out its backoff, so without this a probe would only see the server back if
        it happened to come right after one of gRPC's own attempts. Polling the
        state (cheap, no RPC) leaves no connectivity watch behind when it gives up.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while self._channel.get_state(try_to_connect=True) != grpc.ChannelConnectivity.READY:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(_CONNECT_POLL_S)
        return True

    async def close(self) -> None:
        await self._channel.close(grace=None)
