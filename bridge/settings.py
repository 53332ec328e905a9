"""All of the bridge's configuration, read once at start and passed down.

Environment variables with the prefix ``BRIDGE_`` (nested with ``__``, e.g.
``BRIDGE_KAFKA__BOOTSTRAP_SERVERS``) override an optional TOML file, which
overrides the defaults. Required settings have no default, so a missing one
stops the bridge at start with a message that names it. No other module reads
``os.environ``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bridge.kafka_security import check_security
from bridge.serving.tls import ServingTlsSettings

ENV_PREFIX = "BRIDGE_"
NESTED_DELIMITER = "__"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaConnection(_Section):
    """How to reach and authenticate to the cluster: every Kafka client gets all of it.

    ``bridge.kafka.clients`` passes each field to every client it builds, and the
    operator commands read exactly this part of the Kafka settings, so a setting
    added here reaches the service and the commands alike.
    """

    bootstrap_servers: str = Field(description="Kafka bootstrap servers, host:port[,host:port]")
    client_id: str = Field("tfs-bridge", description="Client id sent to the brokers")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism when the protocol uses SASL"
    )
    sasl_username: str | None = Field(None, description="SASL user name")
    sasl_password: SecretStr | None = Field(None, description="SASL password (never logged)")
    ssl_cafile: Path | None = Field(None, description="CA bundle (PEM); unset: the system's CAs")
    ssl_certfile: Path | None = Field(None, description="Client certificate (PEM) for mTLS")
    ssl_keyfile: Path | None = Field(None, description="Private key (PEM) of SSL_CERTFILE")
    ssl_key_password: SecretStr | None = Field(None, description="SSL_KEYFILE's password")
    ssl_check_hostname: bool = Field(True, description="Broker certificate must name its host")

    @model_validator(mode="after")
    def _security_fits(self) -> KafkaConnection:
        check_security(self)  # files readable, pairs complete, nothing set that would be ignored
        return self


class KafkaSettings(KafkaConnection):
    group_id: str = Field("tfs-bridge", description="Consumer group; replicas share partitions")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a group without committed offsets starts"
    )
    session_timeout_ms: int = Field(10_000, gt=0, description="Group session timeout")
    max_poll_interval_ms: int = Field(300_000, gt=0, description="Max time between polls")
    fetch_max_records: int = Field(
        500, gt=0, description="Most records taken from the consumer per poll"
    )
    fetch_max_wait_ms: int = Field(
        10,
        ge=0,
        description=(
            "Longest a fetch waits for data (brokers that answer a waiting fetch only "
            "at its deadline, like the dev broker, add up to this much latency)"
        ),
    )
    # Fetch buffers are most of what the bridge holds under a backlog (measured: 2 MiB
    # fetches cost ~10 MB more peak RSS than 512 KiB ones, for no throughput here).
    fetch_max_bytes: int = Field(
        512 * 1024, gt=0, description="Most bytes one fetch brings (bounds memory)"
    )
    max_partition_fetch_bytes: int = Field(
        256 * 1024, gt=0, description="Most bytes one fetch brings per partition"
    )
    request_timeout_ms: int = Field(
        30_000,
        gt=0,
        description=(
            "Deadline of a Kafka request; the producer retries a batch within it, then the "
            "bridge holds and sends the batch again (a broker that stalls longer is an outage)"
        ),
    )
    producer_linger_ms: int = Field(
        0,
        ge=0,
        description="Producer batching delay (records batch anyway while a send is in flight)",
    )
    producer_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "none",
        description="Compression of the records the bridge writes (none, gzip, snappy, lz4, zstd)",
    )


class TopicsSettings(_Section):
    input: str = Field(description="Topic the events are read from")
    results: str = Field(description="Topic the result records are written to")
    failures: str = Field(description="Dead-letter topic for the failure records")
    control: str | None = Field(
        None, description="Compacted topic the routes are read from (unset: routes are fixed)"
    )
    shadow: str | None = Field(None, description="Topic for shadow results (needed with a shadow)")


class ServingSettings(_Section, ServingTlsSettings):
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


class ModelSettings(_Section):
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


class BatchSettings(_Section):
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


class RetrySettings(_Section):
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


class DeliverySettings(_Section):
    commit_interval_ms: int = Field(500, gt=0, description="How often done offsets commit")
    shutdown_grace_ms: int = Field(
        10_000, ge=0, description="Time to finish work in flight on SIGTERM"
    )
    rebalance_drain_ms: int = Field(
        5_000, ge=0, description="Time to finish revoked partitions' work"
    )


class MetricsSettings(_Section):
    port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port (0 = off)")
    host: str = Field("127.0.0.1", description="Address the metrics listen on (0.0.0.0 in a pod)")


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level")
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="json when not a terminal under auto"
    )
    payloads: bool = Field(False, description="Log event payloads (off: they may hold PII)")


class _FromEnvAndFile(BaseSettings):
    """``BRIDGE_*`` variables over the TOML file's values (passed as init values)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)


class Settings(_FromEnvAndFile):
    """The whole configuration: one frozen value built at start."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        frozen=True,
        extra="forbid",
    )

    kafka: KafkaSettings
    topics: TopicsSettings
    serving: ServingSettings = ServingSettings()
    model: ModelSettings
    batch: BatchSettings = BatchSettings()
    retry: RetrySettings = RetrySettings()
    delivery: DeliverySettings = DeliverySettings()
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()

    @model_validator(mode="after")
    def _shadow_needs_a_topic(self) -> Settings:
        if self.model.shadow_target and self.model.shadow_fraction > 0 and not self.topics.shadow:
            raise ValueError("a shadow target needs BRIDGE_TOPICS__SHADOW")
        return self

    @model_validator(mode="after")
    def _kafka_bounds_fit(self) -> Settings:
        # One fetch may land on top of a full bridge: its size must leave the bound intact.
        kafka, batch = self.kafka, self.batch
        if kafka.fetch_max_bytes > batch.max_pending_bytes // 2:
            raise ValueError(
                f"BRIDGE_KAFKA__FETCH_MAX_BYTES ({kafka.fetch_max_bytes}) may be at most half of "
                f"BRIDGE_BATCH__MAX_PENDING_BYTES ({batch.max_pending_bytes})"
            )
        if kafka.request_timeout_ms <= kafka.session_timeout_ms:
            # aiokafka gives JoinGroup the same deadline, and a join may wait a session.
            raise ValueError(
                f"BRIDGE_KAFKA__REQUEST_TIMEOUT_MS ({kafka.request_timeout_ms}) must be longer "
                f"than BRIDGE_KAFKA__SESSION_TIMEOUT_MS ({kafka.session_timeout_ms})"
            )
        if kafka.max_partition_fetch_bytes > kafka.fetch_max_bytes:
            raise ValueError(
                f"BRIDGE_KAFKA__MAX_PARTITION_FETCH_BYTES ({kafka.max_partition_fetch_bytes}) "
                f"may be at most BRIDGE_KAFKA__FETCH_MAX_BYTES ({kafka.fetch_max_bytes})"
            )
        return self


# The bridge's own settings share these sections; the commands skip what they do not use.
_IGNORING = ConfigDict(frozen=True, extra="ignore")


class OpsKafka(KafkaConnection):
    """The connection and security settings, exactly as the service reads them."""

    model_config = _IGNORING
    bootstrap_servers: str = ""  # may come from --bootstrap-servers; a command says if missing


class OpsTopics(BaseModel):
    model_config = _IGNORING
    control: str | None = None


class OpsServing(ServingSettings):
    model_config = _IGNORING
    # One command may wait for a version to load: longer than one model call.
    timeout_ms: int = Field(30_000, gt=0, description="Deadline of each call")


class OpsSettings(_FromEnvAndFile):
    """What the operator commands (``bridge serving``, ``bridge routes``) read.

    The same environment and TOML file as ``bridge run``: the sections and
    settings the commands do not use are ignored, the ones they use are checked
    as the service checks them. A missing bootstrap server or control topic is
    named by the command that needs it (a flag may give it).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter=NESTED_DELIMITER, frozen=True, extra="ignore"
    )

    kafka: OpsKafka = OpsKafka()
    topics: OpsTopics = OpsTopics()
    serving: OpsServing = OpsServing()


class SettingsError(Exception):
    """Invalid or missing settings; the message names each offending variable."""


def env_name(path: tuple[str | int, ...]) -> str:
    """``("kafka", "group_id")`` -> ``BRIDGE_KAFKA__GROUP_ID``."""
    return ENV_PREFIX + NESTED_DELIMITER.join(str(part).upper() for part in path)


_S = TypeVar("_S", bound=_FromEnvAndFile)


def load_settings(config_file: Path | None = None) -> Settings:
    """Build the settings from the environment and an optional TOML file."""
    return _load(Settings, config_file)


def load_ops_settings(config_file: Path | None = None) -> OpsSettings:
    """The operator commands' settings, from the same environment and file as the service's."""
    return _load(OpsSettings, config_file)


def _load(cls: type[_S], config_file: Path | None) -> _S:
    file_values: dict[str, Any] = {}
    if config_file is not None:
        try:
            file_values = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"cannot read config file {config_file}: {exc}") from exc
    try:
        return cls(**file_values)
    except ValidationError as exc:
        problems: list[str] = []
        for error in exc.errors():
            path = tuple(p for p in error["loc"] if isinstance(p, str))
            problems.extend(f"{name}: {error['msg']}" for name in _missing_names(cls, path, error))
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems)) from exc


def _missing_names(cls: type[BaseSettings], path: tuple[str, ...], error: Any) -> list[str]:
    """A whole missing section is reported as the required settings inside it."""
    if error["type"] == "missing" and len(path) == 1:
        section = cls.model_fields[path[0]].annotation
        if isinstance(section, type) and issubclass(section, _Section):
            required = [n for n, f in section.model_fields.items() if f.is_required()]
            if required:
                return [env_name((*path, name)) for name in required]
    return [env_name(path)]


def describe_settings() -> Iterator[tuple[str, str, str]]:
    """Every setting as (environment variable, default, description), for --help and README."""
    yield from _describe(Settings, ())


def _describe(model: type[BaseModel], path: tuple[str, ...]) -> Iterator[tuple[str, str, str]]:
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, _Section):
            yield from _describe(annotation, (*path, name))
            continue
        if field.is_required():
            default = "(required)"
        elif field.default_factory is not None:
            default = repr(field.default_factory())  # type: ignore[call-arg]
        else:
            default = "unset" if field.default is None else str(field.default)
        yield env_name((*path, name)), default, field.description or ""
