"""W3C trace context across the bridge's pieces, on OpenTelemetry's in-memory exporter.

The whole pipeline (``Service`` on the fake Kafka clients, as in ``test_service``)
with ``OtelTracing``: an input's ``traceparent`` is the parent of the event's span,
the model call carries the model request's context, the output record carries the
event span's; batches link their events. No sockets: the REST client's headers are
read through httpx's MockTransport.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator, Sequence

import httpx
import orjson
import pytest
from aiokafka import TopicPartition
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler
from opentelemetry.trace import SpanKind, StatusCode

from bridge import tracing
from bridge.domain import Instance, Prediction, Signature, Target
from bridge.pipeline.instances import InstanceBuilder
from bridge.serving.rest_client import RestModelClient
from bridge.tracing import OFF, TracingSettingsError, wanted_exporters
from bridge.tracing.otel import OtelTracing
from tests.bridge.fake_kafka import FakeRecord, until
from tests.bridge.test_service import Pipeline, amounts, event

from .fakes import FakeModelClient
from .signatures import FRAUD, fraud_event

P0 = TopicPartition("in", 0)
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01".encode()


class Recorded:
    def __init__(self, sampler: Sampler = ALWAYS_ON) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider(sampler=ParentBased(sampler))
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracing = OtelTracing(provider, group="g", protocol="grpc")

    def spans(self, kind: SpanKind) -> list[ReadableSpan]:
        return [span for span in self.exporter.get_finished_spans() if span.kind is kind]


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    recorded = Recorded()
    previous = tracing.use(recorded.tracing)
    yield recorded
    tracing.use(previous)


class CarriedClient(FakeModelClient):
    """Records what a real client would send with each call (``bridge.tracing.outgoing``)."""

    def __init__(self) -> None:
        super().__init__(amounts, signature=FRAUD)
        self.carried: list[dict[str, str]] = []

    async def predict(
        self, target: Target, signature: Signature, instances: Sequence[Instance]
    ) -> Prediction:
        self.carried.append(dict(tracing.outgoing() or ()))
        return await super().predict(target, signature, instances)


async def run(
    pipeline: Pipeline, values: Sequence[tuple[bytes, list[tuple[str, bytes]]]]
) -> list[tuple[str, list[tuple[str, bytes]]]]:
    """Feed records with these headers; (topic, headers) of each output, in offset order."""
    log = pipeline.consumer.logs.setdefault(P0, [])
    for value, headers in values:
        log.append(FakeRecord(P0.topic, P0.partition, len(log), value=value, headers=headers))
    pipeline.consumer.assign_more(P0)
    running = await pipeline.start()
    await until(lambda: pipeline.consumer.group_offsets.get(P0) == len(values), timeout_s=5)
    pipeline.stop.set()
    await asyncio.wait_for(running, 5)
    assert pipeline.fatal == []
    return [(sent.topic, list(r.headers)) for sent in pipeline.producer.sent for r in sent.records]


def parsed(traceparent: bytes | str) -> tuple[str, str, str]:
    text = traceparent.decode() if isinstance(traceparent, bytes) else traceparent
    version, trace_id, span_id, flags = text.split("-")
    assert version == "00"
    return trace_id, span_id, flags


async def test_per_event_the_input_is_the_parent_and_the_output_carries_the_bridge_span(
    recorded: Recorded,
) -> None:
    client = CarriedClient()
    pipeline = Pipeline(client, recorded.tracing, max_size=1)
    headers = [("traceparent", TRACEPARENT), ("tracestate", b"vendor=abc"), ("id", b"7")]
    ((topic, out),) = await run(pipeline, [(event(1.0), headers)])

    (event_span,) = recorded.spans(SpanKind.CONSUMER)
    (request_span,) = recorded.spans(SpanKind.CLIENT)
    assert f"{event_span.context.trace_id:032x}" == TRACE_ID
    assert event_span.parent is not None and f"{event_span.parent.span_id:016x}" == PARENT_ID
    assert (
        event_span.attributes is not None and event_span.attributes["messaging.kafka.offset"] == 0
    )
    # Per event: the model request is the event span's child, and the call carries it.
    assert request_span.parent is not None
    assert request_span.parent.span_id == event_span.context.span_id
    assert request_span.context.trace_id == event_span.context.trace_id
    (carried,) = client.carried
    assert parsed(carried["traceparent"]) == (
        TRACE_ID,
        f"{request_span.context.span_id:016x}",
        "01",
    )
    assert carried["tracestate"] == "vendor=abc"
    # The result: same trace, the bridge's span id, in the input's place; the rest as it came.
    assert topic == "out"
    assert [key for key, _ in out] == ["traceparent", "tracestate", "id"]
    values = dict(out)
    assert parsed(values["traceparent"]) == (TRACE_ID, f"{event_span.context.span_id:016x}", "01")
    assert values["tracestate"] == b"vendor=abc"
    assert values["id"] == b"7"


async def test_a_batch_is_one_request_span_linked_to_each_event_span(recorded: Recorded) -> None:
    client = CarriedClient()
    pipeline = Pipeline(client, recorded.tracing, max_size=4, max_wait_ms=50)
    parents = [f"00-{i + 1:032x}-{i + 1:016x}-01".encode() for i in range(4)]
    await run(pipeline, [(event(float(i)), [("traceparent", p)]) for i, p in enumerate(parents)])

    events = recorded.spans(SpanKind.CONSUMER)
    (request_span,) = recorded.spans(SpanKind.CLIENT)
    assert client.calls == [4]
    assert sorted(span.context.trace_id for span in events) == [1, 2, 3, 4]
    assert request_span.parent is None  # a trace of its own ...
    linked = {(link.context.trace_id, link.context.span_id) for link in request_span.links}
    # ... linked to every event's span
    assert linked == {(span.context.trace_id, span.context.span_id) for span in events}
    assert request_span.attributes is not None
    assert request_span.attributes["messaging.batch.message_count"] == 4
    (carried,) = client.carried
    assert parsed(carried["traceparent"])[1] == f"{request_span.context.span_id:016x}"


async def test_a_failure_record_carries_the_event_span_and_the_span_says_why(
    recorded: Recorded,
) -> None:
    pipeline = Pipeline(CarriedClient(), recorded.tracing, max_size=1)
    ((topic, out),) = await run(pipeline, [(b"not json", [("traceparent", TRACEPARENT)])])

    (event_span,) = recorded.spans(SpanKind.CONSUMER)
    assert recorded.spans(SpanKind.CLIENT) == []  # no model call for it
    assert topic == "dlq"
    values = dict(out)
    assert parsed(values["traceparent"]) == (TRACE_ID, f"{event_span.context.span_id:016x}", "01")
    assert values["__bridge.errors.reason"] == b"not_json"
    assert event_span.status.status_code is StatusCode.ERROR
    assert event_span.attributes is not None and event_span.attributes["error.type"] == "not_json"


async def test_without_a_traceparent_the_sampler_decides_whether_a_trace_starts() -> None:
    on, off = Recorded(ALWAYS_ON), Recorded(ALWAYS_OFF)
    ((_, started),) = await run(Pipeline(CarriedClient(), on.tracing, max_size=1), [(event(1), [])])
    ((_, left),) = await run(Pipeline(CarriedClient(), off.tracing, max_size=1), [(event(1), [])])

    (event_span,) = on.spans(SpanKind.CONSUMER)
    assert event_span.parent is None
    assert parsed(dict(started)["traceparent"])[:2] == (
        f"{event_span.context.trace_id:032x}",
        f"{event_span.context.span_id:016x}",
    )
    assert off.exporter.get_finished_spans() == ()
    assert left == []  # not sampled, nothing to continue: no header is made up


async def test_an_unsampled_input_keeps_its_trace_and_flags() -> None:
    off = Recorded(ALWAYS_OFF)
    unsampled = f"00-{TRACE_ID}-{PARENT_ID}-00".encode()
    ((_, out),) = await run(
        Pipeline(CarriedClient(), off.tracing, max_size=1),
        [(event(1), [("traceparent", unsampled)])],
    )
    trace_id, span_id, flags = parsed(dict(out)["traceparent"])
    assert (trace_id, flags) == (TRACE_ID, "00")
    assert span_id != PARENT_ID
    assert off.exporter.get_finished_spans() == ()


async def test_tracing_off_copies_the_input_headers_unchanged() -> None:
    client = CarriedClient()
    headers = [("traceparent", TRACEPARENT), ("tracestate", b"vendor=abc")]
    ((_, out),) = await run(Pipeline(client, OFF, max_size=1), [(event(1), headers)])
    assert out == headers
    assert client.carried == [{}]


async def test_the_rest_client_sends_the_current_request_context(recorded: Recorded) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"outputs": {"fraud_probability": [0.5], "flagged": [0]}})

    rest = RestModelClient("http://sidecar:8501", 1.0, 0.5, transport=httpx.MockTransport(handler))
    instance = InstanceBuilder(FRAUD).build(fraud_event())
    await rest.predict(Target("fraud"), FRAUD, [instance])  # no span current: nothing added
    with recorded.tracing.model_request(Target("fraud"), "latest", []):
        await rest.predict(Target("fraud"), FRAUD, [instance])
    await rest.aclose()

    (request_span,) = recorded.spans(SpanKind.CLIENT)
    untraced, traced = seen
    assert "traceparent" not in untraced.headers
    assert parsed(traced.headers["traceparent"])[1] == f"{request_span.context.span_id:016x}"
    assert orjson.loads(traced.content)["inputs"]["amount"] == [12.5]


@pytest.mark.parametrize(
    ("environ", "exporters"),
    [
        ({}, ()),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "console, otlp"}, ("console", "otlp")),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, ()),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, ()),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            ("otlp",),
        ),
    ],
)
def test_otel_variables_decide_whether_tracing_is_on(
    environ: dict[str, str], exporters: tuple[str, ...]
) -> None:
    assert wanted_exporters(environ) == exporters


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "PROTOCOL"),
    ],
)
def test_what_the_bridge_cannot_honour_is_refused_by_name(
    environ: dict[str, str], named: str
) -> None:
    with pytest.raises(TracingSettingsError, match=named):
        wanted_exporters(environ)


def test_tracing_off_does_not_import_opentelemetry() -> None:
    script = (
        "import json, sys\n"
        "import bridge.cli, bridge.app, bridge.service, bridge.serving.grpc_client\n"
        "from bridge.tracing import start_tracing\n"
        "assert not start_tracing('g', 'grpc', {}).enabled\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('opentelemetry'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(result.stdout) == []
