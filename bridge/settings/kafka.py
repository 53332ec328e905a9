"""The Kafka settings: how every client reaches and authenticates to the cluster, and
how the bridge's consumer and producer behave.

Security settings are checked when they load; each problem names the variable to
fix, and ``bridge run`` exits 2 with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from bridge.settings.base import Section

PREFIX = "BRIDGE_KAFKA__"
SSL_FILES = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
OAUTH_ENDPOINT = (
    "sasl_oauth_token_endpoint_url",
    "sasl_oauth_client_id",
    "sasl_oauth_client_secret",
    "sasl_oauth_scope",
)
OAUTH = ("sasl_oauth_token_file", *OAUTH_ENDPOINT)


class KafkaConnection(Section):
    """How to reach and authenticate to the cluster: every Kafka client gets all of it.

    ``bridge.kafka.clients`` passes each field to every client it builds, and the
    operator commands read exactly this part of the Kafka settings, so a setting
    added here reaches the service and the commands alike.
    """

    env_prefix = PREFIX
    secret_fields = ("sasl_password", "ssl_key_password", "sasl_oauth_client_secret")

    bootstrap_servers: str = Field(description="Kafka bootstrap servers, host:port[,host:port]")
    client_id: str = Field("tfs-bridge", description="Client id sent to the brokers")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = (
        Field(None, description="SASL mechanism when the protocol uses SASL")
    )
    sasl_username: str | None = Field(None, description="SASL user name (PLAIN, SCRAM)")
    sasl_password: SecretStr | None = Field(
        None, description="SASL password (PLAIN, SCRAM; never logged)"
    )
    sasl_oauth_token_file: Path | None = Field(
        None,
        description=(
            "OAUTHBEARER: file holding the token, read again when it changes or expires "
            "(a projected service-account token)"
        ),
    )
    sasl_oauth_token_endpoint_url: str | None = Field(
        None, description="OAUTHBEARER: OIDC token endpoint (client-credentials grant)"
    )
    sasl_oauth_client_id: str | None = Field(None, description="OAUTHBEARER: client id")
    sasl_oauth_client_secret: SecretStr | None = Field(
        None, description="OAUTHBEARER: client secret (never logged)"
    )
    sasl_oauth_scope: str | None = Field(None, description="OAUTHBEARER: scope to ask for")
    ssl_cafile: Path | None = Field(None, description="CA bundle (PEM); unset: the system's CAs")
    ssl_certfile: Path | None = Field(None, description="Client certificate (PEM) for mTLS")
    ssl_keyfile: Path | None = Field(None, description="Private key (PEM) of SSL_CERTFILE")
    ssl_key_password: SecretStr | None = Field(
        None, description="SSL_KEYFILE's password (never logged)"
    )
    ssl_check_hostname: bool = Field(True, description="Broker certificate must name its host")

    @model_validator(mode="after")
    def _security_fits(self) -> KafkaConnection:
        check_tls(self)
        check_sasl(self)
        return self


def _names(names: list[str]) -> str:
    return ", ".join(PREFIX + name.upper() for name in names)


def check_tls(kafka: KafkaConnection) -> None:
    """TLS files readable, pairs complete, nothing set that would be ignored."""
    protocol = kafka.security_protocol
    ssl_set = [name for name in (*SSL_FILES, "ssl_key_password") if getattr(kafka, name)]
    if ssl_set and not protocol.endswith("SSL"):
        # aiokafka would ignore them without a word: a cluster meant to be TLS-only
        # would then be reached in plain text, or fail in a way that hides why.
        raise ValueError(
            f"{_names(ssl_set)} would be ignored with {PREFIX}SECURITY_PROTOCOL={protocol}: "
            "use SSL or SASL_SSL, or unset them"
        )
    for name in SSL_FILES:
        path = getattr(kafka, name)
        if path is None:
            continue
        # Opened, not just stat-ed: a mounted secret with the wrong mode is unreadable.
        try:
            path.open("rb").close()
        except OSError as exc:
            raise ValueError(
                f"{PREFIX}{name.upper()}: cannot read {path}: {exc.strerror}"
            ) from None
    if (kafka.ssl_certfile is None) != (kafka.ssl_keyfile is None):
        missing = "SSL_KEYFILE" if kafka.ssl_keyfile is None else "SSL_CERTFILE"
        raise ValueError(
            f"{PREFIX}{missing} is missing: a client certificate needs both "
            f"{PREFIX}SSL_CERTFILE and {PREFIX}SSL_KEYFILE"
        )


def check_sasl(kafka: KafkaConnection) -> None:
    """The mechanism has what it needs, and nothing is set that it would ignore."""
    protocol, mechanism = kafka.security_protocol, kafka.sasl_mechanism
    sasl_set = [
        name
        for name in ("sasl_mechanism", "sasl_username", "sasl_password", *OAUTH)
        if getattr(kafka, name) is not None
    ]
    if not protocol.startswith("SASL"):
        if sasl_set:
            raise ValueError(
                f"{_names(sasl_set)} would be ignored with {PREFIX}SECURITY_PROTOCOL="
                f"{protocol}: use SASL_PLAINTEXT or SASL_SSL, or unset them"
            )
        return
    if mechanism is None:
        raise ValueError(f"{PREFIX}SASL_MECHANISM is needed with SECURITY_PROTOCOL={protocol}")
    if mechanism == "OAUTHBEARER":
        _check_oauth(kafka)
        return
    for name in ("sasl_username", "sasl_password"):
        if getattr(kafka, name) is None:
            raise ValueError(f"{PREFIX}{name.upper()} is needed with SASL_MECHANISM={mechanism}")
    oauth_set = [name for name in OAUTH if getattr(kafka, name) is not None]
    if oauth_set:
        raise ValueError(
            f"{_names(oauth_set)} would be ignored with SASL_MECHANISM={mechanism}: "
            "they are for OAUTHBEARER"
        )


def _check_oauth(kafka: KafkaConnection) -> None:
    unused = [name for name in ("sasl_username", "sasl_password") if getattr(kafka, name)]
    if unused:
        raise ValueError(f"{_names(unused)} would be ignored with SASL_MECHANISM=OAUTHBEARER")
    path = kafka.sasl_oauth_token_file
    from_file = path is not None
    from_endpoint = kafka.sasl_oauth_token_endpoint_url is not None
    if from_file == from_endpoint:
        raise ValueError(
            f"SASL_MECHANISM=OAUTHBEARER needs one token source: {PREFIX}SASL_OAUTH_TOKEN_FILE "
            f"or {PREFIX}SASL_OAUTH_TOKEN_ENDPOINT_URL (with CLIENT_ID and CLIENT_SECRET)"
        )
    if path is not None:
        endpoint_set = [name for name in OAUTH_ENDPOINT if getattr(kafka, name) is not None]
        if endpoint_set:
            raise ValueError(f"{_names(endpoint_set)} would be ignored with a token file")
        try:
            path.open("rb").close()
        except OSError as exc:
            raise ValueError(
                f"{PREFIX}SASL_OAUTH_TOKEN_FILE: cannot read {path}: {exc.strerror}"
            ) from None
        return
    url = kafka.sasl_oauth_token_endpoint_url or ""
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"{PREFIX}SASL_OAUTH_TOKEN_ENDPOINT_URL must be an http(s) URL")
    for name in ("sasl_oauth_client_id", "sasl_oauth_client_secret"):
        if getattr(kafka, name) is None:
            raise ValueError(f"{PREFIX}{name.upper()} is needed with a token endpoint")


class KafkaSettings(KafkaConnection):
    group_id: str = Field("tfs-bridge", description="Consumer group; replicas share partitions")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a group without committed offsets starts"
    )
    isolation_level: Literal["read_committed", "read_uncommitted"] = Field(
        "read_committed",
        description="read_committed: records of aborted transactions are skipped, not scored",
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
