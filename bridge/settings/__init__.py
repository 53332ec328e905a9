"""All of the bridge's configuration, read once at start and passed down.

Environment variables with the prefix ``BRIDGE_`` (nested with ``__``, e.g.
``BRIDGE_KAFKA__BOOTSTRAP_SERVERS``) override an optional TOML file, which
overrides the defaults. Required settings have no default, so a missing one
stops the bridge at start with a message that names it. Secrets may come from
files (``BRIDGE_KAFKA__SASL_PASSWORD_FILE``). No other module reads
``os.environ``.

``base`` has what sections share, ``kafka`` and ``sections`` the sections,
``root`` the whole (and the operator commands' part), ``loading`` the loading.
"""

from bridge.settings.base import env_name
from bridge.settings.kafka import KafkaConnection, KafkaSettings
from bridge.settings.loading import (
    SettingsError,
    describe_settings,
    load_ops_settings,
    load_settings,
)
from bridge.settings.root import OpsKafka, OpsServing, OpsSettings, OpsTopics, Settings
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

__all__ = [
    "BatchSettings",
    "DeliverySettings",
    "KafkaConnection",
    "KafkaSettings",
    "LogSettings",
    "MetricsSettings",
    "ModelSettings",
    "OpsKafka",
    "OpsServing",
    "OpsSettings",
    "OpsTopics",
    "RetrySettings",
    "ServingSettings",
    "Settings",
    "SettingsError",
    "TopicsSettings",
    "describe_settings",
    "env_name",
    "load_ops_settings",
    "load_settings",
]
