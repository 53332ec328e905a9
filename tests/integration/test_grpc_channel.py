"""The gRPC client's channel reconnects on the bridge's schedule, not gRPC's backoff.

With gRPC's default connection backoff (up to 120 s) a probe right after the server
came back failed at once while the channel waited out its backoff. A tiny
ModelService on loopback (no TensorFlow) is stopped and started again on the
same port: the first probe after it is back must answer True, and a probe of a
server that is down must still answer False within a bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
import pytest

import bridge.serving.grpc_client as grpc_client
from bridge.domain import Target
from bridge.serving.grpc_client import GrpcModelClient
from bridge.wire import get_model_status_pb2, model_management_pb2, model_service_pb2_grpc
from tools.harness.broker import free_port

pytestmark = pytest.mark.integration  # a real gRPC server on loopback

AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE
MODEL = Target("fraud")


class _Status(model_service_pb2_grpc.ModelServiceServicer):
    async def GetModelStatus(
        self, request: Any, context: Any
    ) -> get_model_status_pb2.GetModelStatusResponse:
        response = get_model_status_pb2.GetModelStatusResponse()
        response.model_version_status.add(version=1, state=AVAILABLE)
        return response

    async def HandleReloadConfigRequest(
        self, request: Any, context: Any
    ) -> model_management_pb2.ReloadConfigResponse:
        raise NotImplementedError


async def _serve(port: int) -> grpc.aio.Server:
    server = grpc.aio.server()
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(_Status(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


async def test_channel_options_keep_retries_off_and_reconnect_within_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, Any] = {}
    real: Callable[..., Any] = grpc.aio.insecure_channel

    def capture(target: str, options: Any = None, **kwargs: Any) -> Any:
        seen.update(options or [])
        return real(target, options=options, **kwargs)

    monkeypatch.setattr(grpc.aio, "insecure_channel", capture)
    await GrpcModelClient("127.0.0.1:1", 1.0, 1024).aclose()
    assert seen["grpc.enable_retries"] == 0
    assert seen["grpc.max_reconnect_backoff_ms"] <= 1_000
    assert seen["grpc.initial_reconnect_backoff_ms"] <= seen["grpc.max_reconnect_backoff_ms"]
    assert grpc_client.PROBE_CONNECT_WAIT_S > seen["grpc.max_reconnect_backoff_ms"] * 1.2 / 1000


async def test_first_probe_after_the_server_is_back_answers_true() -> None:
    port = free_port()
    client = GrpcModelClient(f"127.0.0.1:{port}", 5.0, 1024)
    server = await _serve(port)
    try:
        assert await client.is_ready(MODEL)
        await server.stop(grace=None)
        # Down: each probe says so within its bounded connect wait, and the channel
        # backs off between its own attempts.
        for _ in range(2):
            started = time.monotonic()
            assert not await client.is_ready(MODEL)
            assert time.monotonic() - started < grpc_client.PROBE_CONNECT_WAIT_S + 1.0
        server = await _serve(port)
        started = time.monotonic()
        assert await client.is_ready(MODEL), "the first probe after the server is back"
        assert time.monotonic() - started < grpc_client.PROBE_CONNECT_WAIT_S + 0.5
    finally:
        await server.stop(grace=None)
        await client.aclose()
