"""Trace context end to end: the dev broker, the local model server, the bridge as a process.

A bridge from the dev virtualenv (which has the ``tracing`` extra) exports OTLP/HTTP
to a collector stub in this test, and reaches the model server through a gRPC proxy
in this test that records each call's metadata. A ``traceparent`` in comes back on
the result (and on the failure) with the same trace id and the bridge's span id; the
Predict call carries the model request's span, a child of the event's. A bridge from
the runtime virtualenv (no extra) asked to trace says it cannot and copies the
header unchanged.
"""

from __future__ import annotations

import asyncio
import gzip
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.integration.procs import Bridges, log_events
from tools.harness.broker import free_port
from tools.harness.kafka_io import (
    GroupOffsets,
    Item,
    Outputs,
    Producer,
    make_topics,
    payment_items,
    wait_for_inputs,
)
from tools.harness.outputs import Output
from tools.harness.processes import BRIDGE_PYTHON, ModelServer, bridge_env

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
CONSUMER, CLIENT = trace_pb2.Span.SPAN_KIND_CONSUMER, trace_pb2.Span.SPAN_KIND_CLIENT
PREDICT = "/tensorflow.serving.PredictionService/Predict"


class Collector:
    """An OTLP/HTTP trace receiver (POST /v1/traces, protobuf): keeps what it is sent."""

    def __init__(self) -> None:
        self.spans: list[trace_pb2.Span] = []
        self.service_names: set[str] = set()
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}/v1/traces"

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    self.service_names.add(attribute.value.string_value)
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(scope_spans.spans)
        answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=answer, content_type="application/x-protobuf")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._receive)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, HOST, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class MetadataProxy(grpc.GenericRpcHandler):
    """Forwards every call to the model server as bytes, noting (method, metadata)."""

    def __init__(self, upstream: str) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.port = free_port()
        self._upstream = grpc.aio.insecure_channel(upstream)
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers((self,))
        self._server.add_insecure_port(f"{HOST}:{self.port}")

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = details.method
        metadata = {key: str(value) for key, value in details.invocation_metadata}
        self.calls.append((method, metadata))
        forward = self._upstream.unary_unary(method)  # no (de)serializers: bytes through

        async def handle(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await forward(request, timeout=10)
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "")

        return grpc.unary_unary_rpc_method_handler(handle)

    async def start(self) -> None:
        await self._server.start()

    async def stop(self) -> None:
        await self._server.stop(grace=None)
        await self._upstream.close()


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    collector = Collector()
    await collector.start()
    yield collector
    await collector.stop()


@pytest.fixture
async def proxy(model_server: ModelServer) -> AsyncIterator[MetadataProxy]:
    proxy = MetadataProxy(model_server.grpc_target)
    await proxy.start()
    yield proxy
    await proxy.stop()


@dataclass(frozen=True)
class Traced:
    """The W3C fields of a traceparent header."""

    trace_id: str
    span_id: str
    flags: str

    @classmethod
    def parse(cls, header: bytes | str | None) -> Traced:
        assert header is not None, "no traceparent"
        text = header.decode() if isinstance(header, bytes) else header
        version, trace_id, span_id, flags = text.split("-")
        assert version == "00"
        return cls(trace_id, span_id, flags)


def traced_items(count: int) -> tuple[list[Item], dict[bytes, Traced]]:
    """Payments (every 5th malformed) with a traceparent each, but every 4th without one."""
    items, parents = [], {}
    for i, item in enumerate(payment_items(count, malformed_every=5)):
        if i % 4 == 3:
            items.append(item)
            continue
        parent = Traced(f"{0xA000 + i:032x}", f"{0xB000 + i:016x}", "01")
        header = f"00-{parent.trace_id}-{parent.span_id}-01".encode()
        items.append(
            Item(item.key, item.value, (*item.headers, ("traceparent", header)), item.expected)
        )
        parents[dict(item.headers)["trace-id"]] = parent
    return items, parents


async def produce_and_read(
    kafka_bootstrap: str,
    topic_prefix: str,
    bridges: Bridges,
    env_for: Callable[[Any], dict[str, str]],
    python: str,
    items: list[Item],
) -> tuple[list[Output], Any]:
    topics = await make_topics(kafka_bootstrap, topic_prefix, inputs=2, results=1, failures=1)
    bridge = await bridges.start_assigned(env_for(topics), python=python)
    async with Producer(kafka_bootstrap) as producer:
        sent = await producer.send_all(topics.input, items)
    async with (
        Outputs.of(kafka_bootstrap, topics) as outputs,
        GroupOffsets.of(kafka_bootstrap, topics) as offsets,
    ):
        await wait_for_inputs(outputs, sent, offsets, 90, bridge.output)
        records = list(outputs.records)
    code = await asyncio.to_thread(bridge.stop)  # SIGTERM: the last spans are exported
    assert code == 0, bridge.output()
    assert len(records) == len(items), bridge.output()
    return records, bridge


async def test_a_traceparent_comes_back_with_its_trace_id_and_the_bridges_span(
    kafka_bootstrap: str,
    topic_prefix: str,
    model_server: ModelServer,
    proxy: MetadataProxy,
    collector: Collector,
    bridges: Bridges,
) -> None:
    items, parents = traced_items(24)
    otel = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }

    def env_for(topics: Any) -> dict[str, str]:
        env = bridge_env(kafka_bootstrap, topics.names, model_server, group=topics.group, **otel)
        return {**env, "BRIDGE_SERVING__GRPC_TARGET": f"{HOST}:{proxy.port}"}

    # This interpreter: the dev virtualenv, which has the tracing extra.
    records, bridge = await produce_and_read(
        kafka_bootstrap, topic_prefix, bridges, env_for, sys.executable, items
    )
    assert log_events(bridge, "tracing_on"), bridge.output()

    spans = {span.span_id.hex(): span for span in collector.spans}
    assert collector.service_names == {"tfs-kafka-bridge"}
    events = [span for span in spans.values() if span.kind == CONSUMER]
    assert len(events) == len(items)
    kinds = {"result": 0, "failure": 0}
    for record in records:
        kinds[record.kind] += 1
        headers = dict(record.headers)
        ours = Traced.parse(headers.get("traceparent"))
        span = spans[ours.span_id]  # the bridge's event span, exported
        assert span.kind == CONSUMER
        assert span.trace_id.hex() == ours.trace_id
        parent = parents.get(headers["trace-id"])
        if parent is None:  # none came in: the sampler (always on by default) started one
            assert span.parent_span_id == b""
        else:  # same trace, the bridge's span id, whose parent is the input's
            assert ours.trace_id == parent.trace_id
            assert ours.span_id != parent.span_id
            assert span.parent_span_id.hex() == parent.span_id
    assert kinds["result"] > 0 and kinds["failure"] > 0  # both kinds of record carry it

    # Every Predict carried the model request's span: a child of one event's span.
    predicts = [metadata for method, metadata in proxy.calls if method == PREDICT]
    valid = sum(1 for item in items if item.expected == "result")
    assert len(predicts) == valid
    for metadata in predicts:
        carried = Traced.parse(metadata.get("traceparent"))
        request = spans[carried.span_id]
        assert request.kind == CLIENT
        event = spans[request.parent_span_id.hex()]
        assert event.kind == CONSUMER and event.trace_id == request.trace_id
        assert carried.trace_id == request.trace_id.hex()
    # The probes and metadata calls are not part of any event's trace.
    assert all("traceparent" not in m for method, m in proxy.calls if method != PREDICT)


@pytest.mark.skipif(
    BRIDGE_PYTHON == sys.executable,
    reason="needs BRIDGE_RUNTIME_PYTHON (a bridge without the extra)",
)
async def test_without_the_extra_the_traceparent_is_copied_unchanged(
    kafka_bootstrap: str, topic_prefix: str, model_server: ModelServer, bridges: Bridges
) -> None:
    items, parents = traced_items(8)
    otel = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9",
    }

    def env_for(topics: Any) -> dict[str, str]:
        return bridge_env(kafka_bootstrap, topics.names, model_server, group=topics.group, **otel)

    records, bridge = await produce_and_read(
        kafka_bootstrap, topic_prefix, bridges, env_for, BRIDGE_PYTHON, items
    )
    assert log_events(bridge, "tracing_unavailable"), bridge.output()
    for record in records:
        headers = dict(record.headers)
        parent = parents.get(headers["trace-id"])
        if parent is None:
            assert "traceparent" not in headers
        else:
            assert Traced.parse(headers["traceparent"]) == parent
