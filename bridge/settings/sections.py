"""The sections of the service's settings other than Kafka's: topics, the model server,
the model and its routes, batching, retries, delivery, metrics and logs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from bridge.serving.tls import ServingTlsSettings
from bridge.settings.base import Section


class TopicsSettings(Section):
    input: str = Field(description="Topic the events are read from")
    results: str = Field(description="Topic the result records are written to")
    failures: str = Field(description="Dead-letter topic for the failure records")
    control: str | None = Field(
        None, description="Compacted topic the routes are read from (unset: routes are fixed)"
    )
    shadow: str | None = Field(None, description="Topic for shadow results (needed with a shadow)")
    expired: str | None = Field(
        None,
        description=(
            "Topic for the failure records of expired events (unset: the failures topic; "
            "needs DELIVERY__MAX_EVENT_AGE_MS)"
        ),
    )


class ServingSettings(Section, ServingTlsSettings):
    protocol: Literal["grpc", "rest"] = Field("grpc", description="How to call TF Serving")
    grpc_target: str = Field("127.0.0.1:8500", description="TF Serving gRPC host:port")
    rest_url: str = Field("http://127.0.0.1:8501", description="TF Serving REST base URL")
    timeout_ms: int = Field(5_000, gt=0, description="Deadline of one model call")
    connect_timeout_ms: int = Field(1_000, gt=0, description="REST connect timeout")
    max_message_mb: int = Field(256, gt=0, description="gRPC send/receive message limit")
    models_config: Path | None = Field(
        None,
        description="The models.config the server was started with (for bridge serving ...)",
    )


class ModelSettings(Section):
    name: str = Field(description="Model name on the server")
    label: str | None = Field(None, description="Version label to target (e.g. stable)")
    version: int | None = Field(None, gt=0, description="Version number to target")
    signature: str = Field("serving_default", description="Signature to call")
    input_map: dict[str, str] = Field(
        default_factory=dict,
        description="Signature input -> event field, where the names differ (JSON object)",
    )
    copy_fields: list[str] = Field(
        default_factory=list,
        description="Event fields copied into each result (JSON list)",
    )
    max_event_bytes: int = Field(
        1_048_576, gt=0, description="Larger events fail as oversize without a model call"
    )
    routes: dict[str, int] = Field(
        default_factory=dict,
        description=(
            'Weighted targets, label or version number -> weight (JSON, e.g. {"stable": 90, '
            '"canary": 10}); unset: the label or version above, else the latest version'
        ),
    )
    shadow_target: str | None = Field(
        None, description="Label or version that receives mirrored (shadow) traffic"
    )
    shadow_fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of events mirrored to the shadow target"
    )

    @model_validator(mode="after")
    def _label_or_version(self) -> ModelSettings:
        if self.label is not None and self.version is not None:
            raise ValueError("set BRIDGE_MODEL__LABEL or BRIDGE_MODEL__VERSION, not both")
        if self.routes and (self.label is not None or self.version is not None):
            raise ValueError("set BRIDGE_MODEL__ROUTES or a single LABEL/VERSION, not both")
        return self


class BatchSettings(Section):
    max_size: int = Field(1, gt=0, description="Instances per Predict; 1 = per event")
    max_wait_ms: int = Field(5, ge=0, description="Longest wait to fill a batch")
    max_in_flight: int = Field(
        4, gt=0, description="Model requests in flight at once (per-event mode: events)"
    )
    max_pending: int = Field(
        1_000, gt=0, description="Events held in the bridge before it pauses fetching"
    )
    max_pending_bytes: int = Field(
        8 * 1024 * 1024,
        gt=0,
        description=(
            "Bytes of input (keys and values) held before it pauses fetching; "
            "KAFKA__FETCH_MAX_BYTES may be at most half of it"
        ),
    )


class RetrySettings(Section):
    max_attempts: int = Field(
        5, gt=0, description="Attempts per request while the server is up (outages not counted)"
    )
    initial_backoff_ms: int = Field(50, gt=0, description="First retry delay")
    max_backoff_ms: int = Field(2_000, gt=0, description="Cap of the retry delay")
    probe_max_backoff_ms: int = Field(
        2_000, gt=0, description="Cap of the delay between probes while the server is down"
    )
    not_found_timeout_ms: int = Field(
        30_000,
        ge=0,
        description="How long a missing model/version/label is retried before events fail",
    )


class DeliverySettings(Section):
    commit_interval_ms: int = Field(500, gt=0, description="How often done offsets commit")
    shutdown_grace_ms: int = Field(
        10_000, ge=0, description="Time to finish work in flight on SIGTERM"
    )
    rebalance_drain_ms: int = Field(
        5_000, ge=0, description="Time to finish revoked partitions' work"
    )
    ordering: Literal["partition", "key"] = Field(
        "partition",
        description=(
            "partition: results keep input order per input partition; key: per key "
            "only, so a key held by retries holds up no other (see Per-key ordering)"
        ),
    )
    max_event_age_ms: int | None = Field(
        None,
        gt=0,
        description=(
            "Events whose record timestamp is older than this when the model would be called "
            "fail as expired, unsent (unset: never)"
        ),
    )


class MetricsSettings(Section):
    port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port (0 = off)")
    host: str = Field("127.0.0.1", description="Address the metrics listen on (0.0.0.0 in a pod)")


class LogSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level")
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="json when not a terminal under auto"
    )
    payloads: bool = Field(False, description="Log event payloads (off: they may hold PII)")
    summary_interval_ms: int = Field(
        30_000,
        ge=0,
        description=(
            "Interval of the info summary line (events, results, failures by reason, "
            "p50/p99, pending, paused, lag); 0 = off"
        ),
    )
