"""``Tracing`` with the OpenTelemetry SDK (the ``tracing`` extra); imported only when on.

Spans:

- ``{topic} process`` (CONSUMER), one per input event: starts when the intake takes
  the record and ends when Kafka acknowledged its output record. A valid W3C
  ``traceparent`` (with its ``tracestate``) on the record is its parent; without one
  the sampler (``OTEL_TRACES_SAMPLER``, default ``parentbased_always_on``) decides
  whether a new trace starts. The result or failure record carries this span's
  ``traceparent``: the input's trace id, the bridge's span id.
- ``predict {target}`` (CLIENT), one per model request (a batch, its retries and
  splits included): in per-event mode the child of the event's span; a batch of
  several events is a trace of its own with a link to each sampled event span. Its
  context goes out with the call (``outgoing``), so a traced TF Serving or a proxy
  in between joins the trace.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from bridge.domain import Failure, Outcome, Success, Target
from bridge.pipeline.ledger import EventSlot
from bridge.tracing import Metadata, ModelRequest, Queued, Tracing

SERVICE = "tfs-kafka-bridge"
_W3C = TraceContextTextMapPropagator()
_TRACE_HEADERS = ("traceparent", "tracestate")


def traceparent(context: SpanContext) -> str:
    """The W3C header of a span context (version 00)."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


class OtelTracing(Tracing):
    enabled = True

    def __init__(self, provider: TracerProvider, *, group: str, protocol: str) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("bridge")
        self._group = group
        self._protocol = protocol

    @classmethod
    def from_environment(
        cls, exporters: Sequence[str], *, group: str, protocol: str
    ) -> OtelTracing:
        """The SDK as ``OTEL_*`` configure it: sampler, resource, endpoint, batching."""
        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            # Neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES names it.
            resource = resource.merge(Resource({SERVICE_NAME: SERVICE}))
        provider = TracerProvider(resource=resource)
        for name in exporters:
            exporter: SpanExporter = (
                # stdout is the bridge's log stream (JSON lines): console spans go apart.
                ConsoleSpanExporter(out=sys.stderr) if name == "console" else OTLPSpanExporter()
            )
            # Exported from the processor's thread, never on the event loop.
            provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider, group=group, protocol=protocol)

    # -- per event -------------------------------------------------------------------------

    def start_event(self, record: Any) -> Span | None:
        carrier: dict[str, str] = {}
        for key, value in record.headers:
            if key in _TRACE_HEADERS and value is not None:
                carrier[key] = value.decode("latin-1")
        parent = _W3C.extract(carrier) if carrier else Context()
        span = self._tracer.start_span(
            f"{record.topic} process",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": record.topic,
                "messaging.destination.partition.id": str(record.partition),
                "messaging.kafka.offset": record.offset,
                "messaging.consumer.group.name": self._group,
            },
        )
        if span.is_recording() or trace.get_current_span(parent).get_span_context().is_valid:
            return span
        # Not sampled and no trace to continue: nothing to end, the output keeps its headers.
        return None

    def stamp(self, headers: list[tuple[str, bytes]], span: Any) -> None:
        context = span.get_span_context()
        ours = {"traceparent": traceparent(context).encode()}
        if context.trace_state:
            ours["tracestate"] = context.trace_state.to_header().encode()
        placed: set[str] = set()
        kept: list[tuple[str, bytes]] = []
        for key, value in headers:
            if key not in _TRACE_HEADERS:
                kept.append((key, value))
            elif key in ours:  # in place, where the input had it
                kept.append((key, ours[key]))
                placed.add(key)
            # else: an input tracestate our span does not carry is dropped with its parent
        kept.extend((key, value) for key, value in ours.items() if key not in placed)
        headers[:] = kept

    def end_event(self, slot: EventSlot) -> None:
        span: Span = slot.trace
        outcome = slot.outcome
        routed = slot.context
        span.set_attribute("bridge.route", routed.route)
        span.set_attribute("bridge.model.target", str(routed.target))
        if isinstance(outcome, Failure):
            span.set_attribute("error.type", outcome.error.reason)
            span.set_status(Status(StatusCode.ERROR, outcome.error.reason))
        elif isinstance(outcome, Success) and outcome.version is not None:
            span.set_attribute("bridge.model.version", outcome.version)
        span.end()

    # -- per model request -----------------------------------------------------------------

    def model_request(
        self, target: Target, route: str, batch: Sequence[Queued]
    ) -> AbstractContextManager[ModelRequest]:
        return self._model_request(target, route, batch)

    @contextmanager
    def _model_request(
        self, target: Target, route: str, batch: Sequence[Queued]
    ) -> Iterator[ModelRequest]:
        events: list[Span] = [
            pending.slot.trace
            for pending in batch
            if pending.slot is not None and pending.slot.trace is not None
        ]
        links: list[Link] = []
        if len(batch) == 1 and events:
            parent = trace.set_span_in_context(events[0])
        else:
            parent = Context()  # a batch serves many traces: its own, linked to each
            for span in events:
                context = span.get_span_context()
                if context.trace_flags.sampled:
                    links.append(Link(context))
        span = self._tracer.start_span(
            f"predict {target}",
            context=parent,
            kind=SpanKind.CLIENT,
            links=links,
            attributes={
                "rpc.system": "grpc" if self._protocol == "grpc" else "http",
                "bridge.model.name": target.model,
                "bridge.model.target": str(target),
                "bridge.model.signature": target.signature,
                "bridge.route": route,
                "messaging.batch.message_count": len(batch),
            },
        )
        with trace.use_span(span, end_on_exit=True):
            yield _Request(span)

    def outgoing(self) -> Metadata | None:
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        if context.trace_state:
            return (
                ("traceparent", traceparent(context)),
                ("tracestate", context.trace_state.to_header()),
            )
        return (("traceparent", traceparent(context)),)

    def shutdown(self) -> None:
        self._provider.shutdown()


class _Request:
    __slots__ = ("_span",)

    def __init__(self, span: Span) -> None:
        self._span = span

    def done(self, outcomes: Sequence[Outcome]) -> None:
        failures = [outcome for outcome in outcomes if isinstance(outcome, Failure)]
        versions = sorted(
            {o.version for o in outcomes if isinstance(o, Success) and o.version is not None}
        )
        self._span.set_attribute("bridge.batch.failed", len(failures))
        if versions:
            self._span.set_attribute("bridge.model.versions", versions)
        if failures and len(failures) == len(outcomes):
            self._span.set_status(Status(StatusCode.ERROR, failures[0].error.reason))
