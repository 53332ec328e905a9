"""W3C trace context through the bridge, recorded with OpenTelemetry when asked for.

The pipeline talks to one ``Tracing`` object. ``OFF``, the default, does nothing and
imports nothing: the intake checks ``enabled`` once when it is built, and the workers
enter one shared no-op context per batch; output records then keep the
input's ``traceparent`` as it came. ``start_tracing`` returns the OpenTelemetry
implementation (``bridge.tracing.otel``, the ``tracing`` extra) when the standard
``OTEL_*`` variables ask for an exporter:

- on when ``OTEL_TRACES_EXPORTER`` names ``otlp`` or ``console`` (comma-separated), or
  is unset while ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``..._TRACES_ENDPOINT`` is set;
- off when it is unset otherwise, ``none``, or ``OTEL_SDK_DISABLED=true``. The spec's
  default exporter is ``otlp``; the bridge asks for an explicit choice instead, so an
  image that merely has the extra does not send spans to a collector that is not there.

The spans (``bridge.tracing.otel``): one per event, from intake to the acknowledged
output record, the child of the input's ``traceparent``; one per model request, whose
context the gRPC metadata and HTTP headers carry (``outgoing``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

import structlog

from bridge.domain import Outcome, Target
from bridge.pipeline.ledger import EventSlot

log = structlog.get_logger(__name__)

# What a model call carries: gRPC metadata as it is, HTTP headers once made a dict.
Metadata = tuple[tuple[str, str], ...]

EXPORTERS = ("otlp", "console")
OTLP_PROTOCOL = "http/protobuf"  # the one OTLP transport the extra installs (see README)


class TracingSettingsError(Exception):
    """OTEL_* variables the bridge cannot honour; the message names the variable."""


class Queued(Protocol):
    """An event on its way to the model (``bridge.lanes.Pending``)."""

    @property
    def slot(self) -> EventSlot | None: ...


class ModelRequest(Protocol):
    def done(self, outcomes: Sequence[Outcome]) -> None:
        """The request's outcomes, one per instance: recorded on its span."""


class _NoRequest:
    def done(self, outcomes: Sequence[Outcome]) -> None:
        return None


_NO_REQUEST: AbstractContextManager[ModelRequest] = nullcontext(_NoRequest())


class Tracing:
    """Tracing off: every hook is a no-op, and the per-event ones are never called."""

    enabled = False

    def start_event(self, record: Any) -> Any:
        """The span of one input record (None: nothing to trace). Called only when enabled."""
        return None

    def model_request(
        self, target: Target, route: str, batch: Sequence[Queued]
    ) -> AbstractContextManager[ModelRequest]:
        """One model request for these events; its span is current inside."""
        return _NO_REQUEST

    def stamp(self, headers: list[tuple[str, bytes]], span: Any) -> None:
        """Put the event span's ``traceparent`` (and ``tracestate``) in an output's headers."""
        return None

    def end_event(self, slot: EventSlot) -> None:
        """The slot's output record was acknowledged: its span ends."""
        return None

    def outgoing(self) -> Metadata | None:
        """The trace context a model call made now carries, or None."""
        return None

    def shutdown(self) -> None:
        """Export what is left (blocking: the exporter's own timeout bounds it)."""
        return None


OFF = Tracing()
_current: Tracing = OFF


def outgoing() -> Metadata | None:
    """The context of the current model request, for the clients' calls (None when off).

    OpenTelemetry keeps the current span in a context variable that the worker sets
    around the predictor, so the clients ask here instead of every ``ModelClient``
    method taking the headers as an argument.
    """
    return _current.outgoing()


def use(tracing: Tracing) -> Tracing:
    """Make ``tracing`` the one ``outgoing`` asks; the previous one (tests restore it)."""
    global _current  # one per process, as OpenTelemetry's own provider is
    previous, _current = _current, tracing
    return previous


def wanted_exporters(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The span exporters ``OTEL_*`` asks for; () is tracing off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [name for name in names if name]
    endpoints = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    if not names and any(environ.get(variable) for variable in endpoints):
        names = ["otlp"]
    if "none" in names:
        return ()
    unknown = sorted(set(names) - set(EXPORTERS))
    if unknown:
        raise TracingSettingsError(
            f"OTEL_TRACES_EXPORTER: {', '.join(unknown)} is not an exporter the bridge has "
            f"(it has: {', '.join(EXPORTERS)}, none)"
        )
    if "otlp" in names:
        for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            protocol = environ.get(variable)
            if protocol:
                if protocol.strip() != OTLP_PROTOCOL:
                    raise TracingSettingsError(
                        f"{variable}: {protocol} is not supported (the bridge exports "
                        f"OTLP over {OTLP_PROTOCOL})"
                    )
                break
    return tuple(dict.fromkeys(names))


def start_tracing(group: str, protocol: str, environ: Mapping[str, str] | None = None) -> Tracing:
    """The tracing ``OTEL_*`` asks for (``os.environ`` unless given), made current.

    ``group`` and ``protocol`` (the consumer group, grpc or rest) label the spans.

    ``OTEL_*`` are OpenTelemetry's own settings, which its SDK reads itself (sampler,
    endpoint, headers, resource, batching); this reads only the ones that decide
    whether to start it, so they are not copied into ``BRIDGE_*`` settings.
    """
    exporters = wanted_exporters(os.environ if environ is None else environ)
    if not exporters:
        use(OFF)
        return OFF
    try:
        from bridge.tracing.otel import OtelTracing
    except ImportError as exc:
        log.warning(
            "tracing_unavailable",
            reason=f"OTEL_* asks for tracing but OpenTelemetry is not installed ({exc})",
            hint="pip install 'tfs-kafka-bridge[tracing]'; traceparent headers are copied as-is",
        )
        use(OFF)
        return OFF
    tracing = OtelTracing.from_environment(exporters, group=group, protocol=protocol)
    use(tracing)
    log.info("tracing_on", exporters=list(exporters))
    return tracing
