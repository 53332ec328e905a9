"""SASL for the Kafka clients: the OAUTHBEARER token source, and why a login fails.

aiokafka logs a refused login and raises only "Unable to bootstrap", or lets its SCRAM
client's KeyError/ValueError out when the server's last message is an error (Tansu
sends one), so a client that cannot start asks once more, on one connection, why.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from pathlib import Path
from typing import Any

from aiokafka.abc import AbstractTokenProvider
from aiokafka.conn import create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from bridge.kafka.oauth import ClientCredentialsTokenProvider, FileTokenProvider, OAuthTokenError
from bridge.kafka.tls import CHECK_TIMEOUT_S
from bridge.settings import KafkaConnection, SettingsError

# The mechanisms whose login is the username and password.
PASSWORD_MECHANISMS = frozenset({"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"})
# What one aiokafka connection accepts of a client's options (no bootstrap list, no
# client-only knobs); read from aiokafka so an option added to a client passes through.
_CONNECTION_OPTIONS = frozenset(inspect.signature(create_conn).parameters) - {"host", "port"}


class KafkaSaslError(SettingsError, KafkaConnectionError):  # type: ignore[misc] # untyped base
    """The broker refused the SASL login, or no OAUTHBEARER token could be had: exit 2
    for ``bridge run``, a Kafka failure for the operator commands (as ``KafkaTlsError``)."""


def token_provider(kafka: KafkaConnection) -> AbstractTokenProvider:
    """The OAUTHBEARER token source all clients of ``kafka`` share: one cache, one refresh."""
    secret = kafka.sasl_oauth_client_secret
    return _token_provider(
        kafka.sasl_oauth_token_file,
        kafka.sasl_oauth_token_endpoint_url,
        kafka.sasl_oauth_client_id,
        None if secret is None else secret.get_secret_value(),
        kafka.sasl_oauth_scope,
    )


@functools.cache
def _token_provider(
    path: Path | None, url: str | None, client_id: str | None, secret: str | None, scope: str | None
) -> AbstractTokenProvider:
    if path is not None:
        return FileTokenProvider(path)
    if url is None or client_id is None or secret is None:  # the settings' checks make sure
        raise SettingsError("OAUTHBEARER needs a token file or a token endpoint with a client")
    return ClientCredentialsTokenProvider(url, client_id, secret, scope)


def _who(kafka: KafkaConnection) -> tuple[str, str]:
    """Whose login it was, and which settings to check."""
    if kafka.sasl_mechanism == "OAUTHBEARER":
        source = (
            "BRIDGE_KAFKA__SASL_OAUTH_TOKEN_FILE"
            if kafka.sasl_oauth_token_file is not None
            else "BRIDGE_KAFKA__SASL_OAUTH_TOKEN_ENDPOINT_URL"
        )
        return (
            f"the OAUTHBEARER token from {source}",
            f"check {source} (and the client, scope and audience the broker expects)",
        )
    return (
        f"BRIDGE_KAFKA__SASL_USERNAME={kafka.sasl_username} with {kafka.sasl_mechanism}",
        "check BRIDGE_KAFKA__SASL_USERNAME, BRIDGE_KAFKA__SASL_PASSWORD and "
        "BRIDGE_KAFKA__SASL_MECHANISM",
    )


async def sasl_refusal(kafka: KafkaConnection, client_options: dict[str, Any]) -> str | None:
    """Why the SASL login at the bootstrap servers fails, naming the settings; None if it
    works or fails for a reason that is not the login (an unreachable broker).

    ``client_options``: a client's options (those of one connection are used).
    """
    if kafka.sasl_mechanism == "OAUTHBEARER":
        try:
            await token_provider(kafka).token()
        except OAuthTokenError as exc:
            # No token to log in with: the token source's own words (args, as a
            # KafkaError's str() puts its class name first).
            return str(exc.args[0]) if exc.args else str(exc)
    options = {key: value for key, value in client_options.items() if key in _CONNECTION_OPTIONS}
    who, check = _who(kafka)
    for server in kafka.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                connection = await create_conn(host, int(port), **options)
        except (SaslAuthenticationFailed, KeyError, ValueError) as exc:
            if isinstance(exc, SaslAuthenticationFailed):
                detail = str(exc)  # the broker's own words (Apache Kafka sends some)
            elif isinstance(exc, KeyError):
                detail = "its last SCRAM message is an error, not its proof"
            else:
                detail = "its SCRAM proof does not match the password"
            return f"the broker at {server} refused the SASL login of {who} ({detail}): {check}"
        except (UnsupportedSaslMechanismError, IllegalSaslStateError) as exc:
            return (
                f"the broker at {server} does not accept BRIDGE_KAFKA__SASL_MECHANISM="
                f"{kafka.sasl_mechanism} ({exc}): check BRIDGE_KAFKA__SASL_MECHANISM and "
                "BRIDGE_KAFKA__SECURITY_PROTOCOL"
            )
        except KafkaConnectionError:
            # The TCP (and TLS) connection was made: the broker hung up during the login.
            # Tansu does that for a mechanism it does not offer (PLAIN).
            return (
                f"the broker at {server} closed the connection during the SASL login of "
                f"{who}: it may not offer that mechanism, or the listener may not be "
                f"{kafka.security_protocol} (BRIDGE_KAFKA__SECURITY_PROTOCOL); {check}"
            )
        except (OSError, TimeoutError):
            continue  # not reached: not the login's fault, aiokafka's error stands
        connection.close()
    return None
