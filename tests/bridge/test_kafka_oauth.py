"""The OAUTHBEARER token providers: a token file (tmp_path, a fake clock) and the
client-credentials grant (httpx's MockTransport, plus one real loopback token endpoint)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import httpx
import pytest
import structlog
from aiokafka.abc import AbstractTokenProvider
from aiokafka.conn import OAuthAuthenticator
from aiokafka.errors import KafkaConnectionError

from bridge.kafka.oauth import (
    ClientCredentialsTokenProvider,
    FileTokenProvider,
    OAuthTokenError,
    jwt_expiry,
)

URL = "https://idp.example/oauth2/token"
SECRET = "s3cr:t/+~* é"  # noqa: S105 # everything the form encoding must get right


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def jwt(exp: float | None, subject: str = "bridge") -> str:
    def part(claims: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")

    claims: dict[str, Any] = {"sub": subject} | ({"exp": exp} if exp is not None else {})
    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


# -- the token file ------------------------------------------------------------------------


def test_both_are_aiokafka_token_providers_with_a_retriable_error() -> None:
    assert isinstance(FileTokenProvider(Path("x")), AbstractTokenProvider)
    assert isinstance(ClientCredentialsTokenProvider(URL, "id", "secret"), AbstractTokenProvider)
    # aiokafka logs and retries Kafka errors from a new connection; others end its tasks.
    assert issubclass(OAuthTokenError, KafkaConnectionError)


async def test_reads_the_token_stripped_and_aiokafka_sends_it_as_is(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  opaque-token-1\n")
    provider = FileTokenProvider(path)
    assert await provider.token() == "opaque-token-1"
    # What aiokafka 0.14 sends at each connection's authentication: no extensions added.
    payload, expect_response = await OAuthAuthenticator(sasl_oauth_token_provider=provider).step(
        None
    )
    assert payload == b"n,,\x01auth=Bearer opaque-token-1\x01\x01"
    assert expect_response


async def test_rereads_after_an_atomic_replace(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first")
    provider = FileTokenProvider(path)
    assert await provider.token() == "first"
    (tmp_path / "token.new").write_text("secnd")  # same size: the inode tells them apart
    os.replace(tmp_path / "token.new", path)
    assert await provider.token() == "secnd"


async def test_rereads_after_a_kubernetes_data_symlink_swap(tmp_path: Path) -> None:
    # The kubelet's layout: token -> ..data/token, ..data -> ..<timestamp>, swapped by rename.
    def projection(name: str, token: str) -> None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "token").write_text(token)
        (tmp_path / "..data_tmp").symlink_to(name)
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")

    projection("..2026_12_02_01", jwt(2_000_000, "one"))
    (tmp_path / "token").symlink_to("..data/token")
    provider = FileTokenProvider(tmp_path / "token", clock=Clock())
    assert await provider.token() == jwt(2_000_000, "one")
    projection("..2026_12_02_02", jwt(2_000_000, "two"))
    assert await provider.token() == jwt(2_000_000, "two")


async def test_a_past_jwt_exp_forces_a_reread_of_an_unchanged_looking_file(
    tmp_path: Path,
) -> None:
    path, clock = tmp_path / "token", Clock(1_000_000)
    path.write_text(jwt(1_000_100, "old"))
    stat = path.stat()
    provider = FileTokenProvider(path, clock=clock)
    assert await provider.token() == jwt(1_000_100, "old")
    # Rewritten in place with the same size and mtime: only the expiry can tell.
    path.write_text(jwt(1_000_900, "new"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert await provider.token() == jwt(1_000_100, "old")  # cached while unexpired
    clock.now = 1_000_100
    assert await provider.token() == jwt(1_000_900, "new")


async def test_an_expired_token_in_the_file_is_an_error_not_sent(tmp_path: Path) -> None:
    path, token = tmp_path / "token", jwt(999_999)
    path.write_text(token)
    with pytest.raises(OAuthTokenError, match="expired") as caught:
        await FileTokenProvider(path, clock=Clock(1_000_000)).token()
    assert "BRIDGE_KAFKA__SASL_OAUTH_TOKEN_FILE" in str(caught.value)
    assert token not in str(caught.value)


@pytest.mark.parametrize("content", ["", " \n\t", "two tokens\n"])
async def test_an_empty_or_odd_file_names_the_setting(tmp_path: Path, content: str) -> None:
    (tmp_path / "token").write_text(content)
    with pytest.raises(OAuthTokenError, match="BRIDGE_KAFKA__SASL_OAUTH_TOKEN_FILE"):
        await FileTokenProvider(tmp_path / "token").token()


async def test_a_missing_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(OAuthTokenError, match="BRIDGE_KAFKA__SASL_OAUTH_TOKEN_FILE"):
        await FileTokenProvider(tmp_path / "absent").token()


def test_jwt_expiry_of_opaque_or_malformed_tokens_is_none() -> None:
    assert jwt_expiry(jwt(1234.5)) == 1234.5
    assert jwt_expiry(jwt(None)) is None
    for token in ("opaque", "a.b.c", "a.!!!.c", "a." + base64.b64encode(b"[1]").decode() + ".c"):
        assert jwt_expiry(token) is None


# -- the client-credentials grant ---------------------------------------------------------

Answer = Callable[[httpx.Request], httpx.Response]


class Endpoint:
    """A token endpoint behind MockTransport: records the requests, answers with ``answer``."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.count = 0
        self.answer = answer or self.grant
        self.closed = False
        self.gate: asyncio.Event | None = None

    def grant(self, request: httpx.Request, expires_in: int = 100) -> httpx.Response:
        return httpx.Response(
            200, json={"access_token": f"token-{self.count}", "expires_in": expires_in}
        )

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.count += 1
        await asyncio.sleep(0)  # let concurrent callers pile up behind the first
        if self.gate is not None:
            await self.gate.wait()
        return self.answer(request)

    def transport(self) -> httpx.AsyncBaseTransport:
        endpoint = self

        class Transport(httpx.MockTransport):
            async def aclose(self) -> None:
                endpoint.closed = True

        return Transport(self.handle)


def provider(
    endpoint: Endpoint, clock: Clock | None = None, scope: str | None = None
) -> ClientCredentialsTokenProvider:
    return ClientCredentialsTokenProvider(
        URL, "bridge app", SECRET, scope, transport=endpoint.transport(), clock=clock or Clock()
    )


async def test_posts_the_grant_with_form_encoded_basic_credentials() -> None:
    endpoint = Endpoint()
    assert await provider(endpoint).token() == "token-1"
    (request,) = endpoint.requests
    assert (request.method, str(request.url)) == ("POST", URL)
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.content.decode(), strict_parsing=True) == {
        "grant_type": ["client_credentials"]
    }
    scheme, _, credentials = request.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    decoded = base64.b64decode(credentials).decode("ascii")
    assert decoded == "bridge+app:s3cr%3At%2F%2B%7E*+%C3%A9"  # as Java's URLEncoder has it
    user, password = decoded.split(":")
    assert (unquote_plus(user), unquote_plus(password)) == ("bridge app", SECRET)
    assert not endpoint.closed  # the caller's transport is lent, not closed with the client


async def test_sends_the_scope_only_when_set() -> None:
    endpoint = Endpoint()
    await provider(endpoint, scope="kafka:produce kafka:consume").token()
    assert parse_qs(endpoint.requests[0].content.decode()) == {
        "grant_type": ["client_credentials"],
        "scope": ["kafka:produce kafka:consume"],
    }


async def test_reuses_the_token_until_80_percent_of_its_lifetime_then_refreshes() -> None:
    endpoint, clock = Endpoint(), Clock(1_000_000)
    tokens = provider(endpoint, clock)
    assert await tokens.token() == "token-1"
    clock.now += 79.9
    assert await tokens.token() == "token-1"
    assert endpoint.count == 1
    clock.now += 0.1
    assert await tokens.token() == "token-2"
    assert endpoint.count == 2


async def test_concurrent_calls_at_connect_time_share_one_request() -> None:
    endpoint = Endpoint()
    tokens = provider(endpoint)
    assert await asyncio.gather(*(tokens.token() for _ in range(5))) == ["token-1"] * 5
    assert endpoint.count == 1


async def test_a_refresh_under_way_does_not_hold_up_callers_while_the_token_works() -> None:
    endpoint, clock = Endpoint(), Clock(1_000_000)
    tokens = provider(endpoint, clock)
    await tokens.token()
    endpoint.gate = asyncio.Event()  # the identity provider is slow to answer
    clock.now += 90
    refresh = asyncio.create_task(tokens.token())
    await asyncio.sleep(0.01)
    assert endpoint.count == 2
    assert await asyncio.wait_for(tokens.token(), 1) == "token-1"  # no waiting for the refresh
    endpoint.gate.set()
    assert await refresh == "token-2"
    assert await tokens.token() == "token-2"


async def test_a_failed_refresh_keeps_the_valid_token_and_retries_a_little_later() -> None:
    endpoint, clock = Endpoint(), Clock(1_000_000)
    tokens = provider(endpoint, clock)
    await tokens.token()
    endpoint.answer = lambda request: httpx.Response(503, text="down")
    clock.now += 85
    with structlog.testing.capture_logs() as logs:
        assert await tokens.token() == "token-1"
        assert await tokens.token() == "token-1"  # no second request within the interval
    assert endpoint.count == 2
    assert [entry["event"] for entry in logs] == ["kafka_oauth_refresh_failed"]
    assert "HTTP 503" in logs[0]["error"]
    assert SECRET not in repr(logs) and "token-1" not in repr(logs)
    clock.now += 5
    endpoint.answer = endpoint.grant
    assert await tokens.token() == "token-3"
    # Past the expiry there is nothing to fall back on: the failure is the caller's.
    endpoint.answer = lambda request: httpx.Response(503)
    clock.now += 100
    with pytest.raises(OAuthTokenError, match="HTTP 503"):
        await tokens.token()


async def test_invalid_client_names_the_credentials_settings_and_never_the_secret() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        # Some endpoints echo what they got; the message must still not carry the secret.
        description = f"client authentication failed for secret {SECRET}"
        return httpx.Response(
            401, json={"error": "invalid_client", "error_description": description}
        )

    with pytest.raises(OAuthTokenError) as caught:
        await provider(Endpoint(refuse)).token()
    message = str(caught.value)
    assert "HTTP 401 invalid_client" in message
    assert "BRIDGE_KAFKA__SASL_OAUTH_CLIENT_ID" in message
    assert "BRIDGE_KAFKA__SASL_OAUTH_CLIENT_SECRET" in message
    assert SECRET not in message
    assert base64.b64encode(SECRET.encode()).decode() not in message


async def test_invalid_scope_names_the_scope_setting() -> None:
    endpoint = Endpoint(lambda request: httpx.Response(400, json={"error": "invalid_scope"}))
    with pytest.raises(OAuthTokenError, match="BRIDGE_KAFKA__SASL_OAUTH_SCOPE"):
        await provider(endpoint, scope="nope").token()


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, json={"token_type": "Bearer", "expires_in": 100}),
        httpx.Response(200, text="<html>login page</html>"),
    ],
)
async def test_a_200_without_an_access_token_names_the_endpoint(answer: httpx.Response) -> None:
    with pytest.raises(OAuthTokenError, match="without an access_token") as caught:
        await provider(Endpoint(lambda request: answer)).token()
    assert URL in str(caught.value)
    assert "BRIDGE_KAFKA__SASL_OAUTH_TOKEN_ENDPOINT_URL" in str(caught.value)


@pytest.mark.parametrize(
    "failure", [httpx.ConnectError("connection refused"), httpx.ReadTimeout("slow")]
)
async def test_an_unreachable_endpoint_names_the_url_setting(failure: Exception) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise failure

    with pytest.raises(OAuthTokenError, match="BRIDGE_KAFKA__SASL_OAUTH_TOKEN_ENDPOINT_URL"):
        await provider(Endpoint(fail)).token()


async def test_without_expires_in_the_jwt_exp_sets_the_lifetime() -> None:
    clock = Clock(1_000_000)
    token = jwt(1_000_100)
    endpoint = Endpoint(lambda request: httpx.Response(200, json={"access_token": token}))
    tokens = provider(endpoint, clock)
    assert await tokens.token() == token
    clock.now += 79
    await tokens.token()
    assert endpoint.count == 1
    clock.now += 1
    await tokens.token()
    assert endpoint.count == 2


async def test_a_token_of_unknown_lifetime_is_an_error() -> None:
    answer = httpx.Response(200, json={"access_token": "opaque"})
    with pytest.raises(OAuthTokenError, match="expires_in"):
        await provider(Endpoint(lambda request: answer)).token()


# -- a real token endpoint on loopback ------------------------------------------------------


@pytest.fixture
def token_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            expected = "Basic " + base64.b64encode(b"bridge:secret").decode()
            good = self.headers["Authorization"] == expected and form == {
                "grant_type": ["client_credentials"]
            }
            body = {"access_token": "real-token", "expires_in": 3600} if good else {}
            data = json.dumps(body or {"error": "invalid_client"}).encode()
            self.send_response(200 if good else 401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/token"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def test_a_real_endpoint_through_httpx_own_transport(token_endpoint: str) -> None:
    assert await ClientCredentialsTokenProvider(token_endpoint, "bridge", "secret").token() == (
        "real-token"
    )
    with pytest.raises(OAuthTokenError, match="CLIENT_SECRET"):
        await ClientCredentialsTokenProvider(token_endpoint, "bridge", "wrong").token()


async def test_a_refused_connection_names_the_url_setting() -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tokens = ClientCredentialsTokenProvider(f"http://127.0.0.1:{port}/token", "id", "secret")
    with pytest.raises(OAuthTokenError, match="BRIDGE_KAFKA__SASL_OAUTH_TOKEN_ENDPOINT_URL"):
        await tokens.token()
