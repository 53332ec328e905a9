"""The checks of ``KafkaConnection``'s TLS and SASL settings, made when the settings load.

Apart from ``bridge.settings`` to keep that module under the line limit. Each
problem names the environment variable to fix; ``bridge.settings`` turns the
``ValueError`` into a ``SettingsError`` (``bridge run`` exits 2).
"""

from __future__ import annotations

from typing import Any

PREFIX = "BRIDGE_KAFKA__"
SSL_FILES = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")


def check_security(kafka: Any) -> None:
    """Raise ``ValueError`` naming the first setting that cannot work as given.

    ``kafka`` is a ``bridge.settings.KafkaConnection``; not imported here, even for
    typing, so that the two modules do not import each other.
    """
    protocol = kafka.security_protocol
    ssl_set = [name for name in (*SSL_FILES, "ssl_key_password") if getattr(kafka, name)]
    if ssl_set and not protocol.endswith("SSL"):
        # aiokafka would ignore them without a word: a cluster meant to be TLS-only
        # would then be reached in plain text, or fail in a way that hides why.
        names = ", ".join(PREFIX + name.upper() for name in ssl_set)
        raise ValueError(
            f"{names} would be ignored with {PREFIX}SECURITY_PROTOCOL={protocol}: "
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
    if protocol.startswith("SASL"):
        for name in ("sasl_mechanism", "sasl_username", "sasl_password"):
            if getattr(kafka, name) is None:
                raise ValueError(
                    f"{PREFIX}{name.upper()} is needed with SECURITY_PROTOCOL={protocol}"
                )
