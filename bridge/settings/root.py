"""The whole configuration of ``bridge run``, and the part the operator commands read.

The checks that span sections live here; each section checks itself.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import SettingsConfigDict

from bridge.settings.base import ENV_PREFIX, NESTED_DELIMITER, FromEnvAndFile
from bridge.settings.kafka import KafkaConnection, KafkaSettings
from bridge.settings.sections import (
    BatchSettings,
    DeliverySettings,
    LogSettings,
    MetricsSettings,
    ModelSettings,
    RetrySettings,
    ServingSettings,
    TopicsSettings,
)


class Settings(FromEnvAndFile):
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
    def _expired_topic_needs_an_age(self) -> Settings:
        # Without a bound nothing expires: the topic would be a setting that does nothing.
        if self.topics.expired and self.delivery.max_event_age_ms is None:
            raise ValueError("BRIDGE_TOPICS__EXPIRED needs BRIDGE_DELIVERY__MAX_EVENT_AGE_MS")
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
    group_id: str = "tfs-bridge"  # bridge run's default; `failures replay` names its group after it


class OpsTopics(BaseModel):
    model_config = _IGNORING
    control: str | None = None
    failures: str | None = None


class OpsServing(ServingSettings):
    model_config = _IGNORING
    # One command may wait for a version to load: longer than one model call.
    timeout_ms: int = Field(30_000, gt=0, description="Deadline of each call")


class OpsSettings(FromEnvAndFile):
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
