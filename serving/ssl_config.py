"""``--ssl_config_file``: upstream's ``SSLConfig`` text proto -> gRPC server credentials.

The file holds the PEM contents inline, as upstream reads it
(``ts:config/ssl_config.proto``; ``server.cc``, ``BuildServerCredentialsFromSSLConfigFile``)::

    server_key: "-----BEGIN PRIVATE KEY-----\\n..."
    server_cert: "-----BEGIN CERTIFICATE-----\\n..."
    custom_ca: "-----BEGIN CERTIFICATE-----\\n..."
    client_verify: true

Only the gRPC port uses it. Upstream builds its HTTP server without TLS whatever the
config says, so the REST port stays plain HTTP here too.

``tensorflow-serving-api`` ships no ``ssl_config_pb2``. The message is four scalar
fields, so it is declared here (upstream's package, names and numbers) in a pool of
its own, rather than as a ``bridge.wire`` module: the bridge never reads this file.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from serving.errors import ServingError

# The same reading and error messages as every other config file of the server.
from serving.model_config import _read_text_proto


def _ssl_config_class() -> Any:
    file = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/ssl_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
    )
    message = file.message_type.add(name="SSLConfig")
    string, boolean = (
        descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
    )
    optional = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    for number, (name, kind) in enumerate(
        (
            ("server_key", string),
            ("server_cert", string),
            ("custom_ca", string),
            ("client_verify", boolean),
        ),
        start=1,
    ):
        message.field.add(name=name, number=number, type=kind, label=optional)
    # A private pool: the default one may later receive upstream's own file.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.SSLConfig")
    )


SSLConfig = _ssl_config_class()


def read_ssl_config(path: str) -> Any:
    """Read a ``--ssl_config_file`` (text-format ``SSLConfig``)."""
    return _read_text_proto(path, SSLConfig())


def server_credentials(config: Any) -> grpc.ServerCredentials:
    """Upstream's credentials for a config: its key pair, ``custom_ca`` as the roots
    for client certificates, and a client certificate required iff ``client_verify``.
    """
    if not config.server_key or not config.server_cert:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "ssl_config_file: server_key and server_cert must both be set",
        )
    if config.client_verify and not config.custom_ca:
        # Upstream would start and then refuse every client; say so at start instead.
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "ssl_config_file: client_verify needs custom_ca to verify client certificates",
        )
    return grpc.ssl_server_credentials(
        [(config.server_key.encode(), config.server_cert.encode())],
        root_certificates=config.custom_ca.encode() or None,
        require_client_auth=bool(config.client_verify),
    )
