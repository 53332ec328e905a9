"""Kafka OAUTHBEARER: the bridge process gets its token from a file or an OIDC token
endpoint (a real HTTP server here), and says which setting to fix when it cannot log in.

The dev broker with ``--authentication`` offers OAUTHBEARER but has no token validator,
so it refuses every token: the tests prove the token reaches the login (the endpoint
was asked, the broker refused what it got) and each refusal stops ``bridge run`` at
start with exit 2 and a message naming the setting, without printing the secret or
the token. A login that works needs a real cluster with an identity provider; the
token sources themselves are unit-tested in ``tests/bridge/test_kafka_oauth.py``.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tools.harness.broker import DevBroker
from tools.harness.processes import ModelServer, bridge_env, run_bridge

pytestmark = pytest.mark.integration

SECRET = "client-secret-never-shown"  # noqa: S105 - a test value
CLIENT = "bridge-client"


def jwt(exp: float) -> str:
    """An unsigned JWT with the given expiry (the broker would check the signature)."""
    encode = lambda part: base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=")  # noqa: E731
    return b".".join(
        [encode({"alg": "none"}), encode({"sub": CLIENT, "exp": exp}), b"sig"]
    ).decode()


class TokenEndpoint:
    """An OIDC token endpoint on 127.0.0.1 that answers every request with one reply."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.requests: list[tuple[str, str]] = []  # (Authorization header, form body)
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                form = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                endpoint.requests.append((self.headers.get("Authorization", ""), form))
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> TokenEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture(scope="module")
def broker() -> Iterator[DevBroker]:
    with DevBroker(authentication=True) as running:
        yield running


def refused_at_start(broker: DevBroker, server: ModelServer, **kafka: str) -> str:
    settings = {
        "BRIDGE_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "BRIDGE_KAFKA__SASL_MECHANISM": "OAUTHBEARER",
        **{f"BRIDGE_KAFKA__{name}": value for name, value in kafka.items()},
    }
    env = bridge_env(broker.bootstrap_servers, ("in", "out", "dlq"), server, **settings)
    done = run_bridge(env, "run")
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    assert SECRET not in output
    return done.stderr


def test_a_token_from_a_file_reaches_the_login_and_its_refusal_names_the_file(
    broker: DevBroker, model_server: ModelServer, tmp_path: Path
) -> None:
    token = jwt(time.time() + 3600)
    path = tmp_path / "token"
    path.write_text(token + "\n")
    stderr = refused_at_start(broker, model_server, SASL_OAUTH_TOKEN_FILE=str(path))
    assert "refused the SASL login of the OAUTHBEARER token from" in stderr, stderr
    assert "BRIDGE_KAFKA__SASL_OAUTH_TOKEN_FILE" in stderr
    assert token not in stderr


def test_an_expired_token_in_the_file_is_not_sent_and_says_so(
    broker: DevBroker, model_server: ModelServer, tmp_path: Path
) -> None:
    path = tmp_path / "token"
    path.write_text(jwt(time.time() - 60))
    stderr = refused_at_start(broker, model_server, SASL_OAUTH_TOKEN_FILE=str(path))
    assert "BRIDGE_KAFKA__SASL_OAUTH_TOKEN_FILE" in stderr and "expired" in stderr, stderr


def test_the_endpoint_is_asked_for_a_client_credentials_token_and_the_refusal_named(
    broker: DevBroker, model_server: ModelServer
) -> None:
    reply = {"access_token": jwt(time.time() + 3600), "token_type": "Bearer", "expires_in": 3600}
    with TokenEndpoint(200, reply) as endpoint:
        stderr = refused_at_start(
            broker,
            model_server,
            SASL_OAUTH_TOKEN_ENDPOINT_URL=endpoint.url,
            SASL_OAUTH_CLIENT_ID=CLIENT,
            SASL_OAUTH_CLIENT_SECRET=SECRET,
            SASL_OAUTH_SCOPE="kafka",
        )
    assert "BRIDGE_KAFKA__SASL_OAUTH_TOKEN_ENDPOINT_URL" in stderr, stderr
    assert endpoint.requests, "the bridge never asked the token endpoint"
    authorization, form = endpoint.requests[0]
    assert base64.b64decode(authorization.removeprefix("Basic ")).decode() == f"{CLIENT}:{SECRET}"
    assert "grant_type=client_credentials" in form and "scope=kafka" in form
    # One token serves every connection of the start (cached), not one request each.
    assert len(endpoint.requests) == 1, endpoint.requests


def test_a_client_the_endpoint_refuses_names_the_client_settings(
    broker: DevBroker, model_server: ModelServer
) -> None:
    reply = {"error": "invalid_client", "error_description": "bad client credentials"}
    with TokenEndpoint(401, reply) as endpoint:
        stderr = refused_at_start(
            broker,
            model_server,
            SASL_OAUTH_TOKEN_ENDPOINT_URL=endpoint.url,
            SASL_OAUTH_CLIENT_ID=CLIENT,
            SASL_OAUTH_CLIENT_SECRET=SECRET,
        )
    assert "BRIDGE_KAFKA__SASL_OAUTH_CLIENT_ID" in stderr, stderr
    assert "BRIDGE_KAFKA__SASL_OAUTH_CLIENT_SECRET" in stderr
