"""OAUTHBEARER token sources for the Kafka clients: a token file, or a client-credentials grant.

aiokafka awaits ``token()`` once per new broker connection, during the SASL handshake and
with no timeout of its own (``conn.py``'s ``OAuthAuthenticator``), and keeps no copy: so
each provider caches, bounds its own waiting, and returns a token that is valid right now.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx
import structlog
from aiokafka.abc import AbstractTokenProvider
from aiokafka.errors import KafkaConnectionError

log = structlog.get_logger(__name__)

# The settings the error messages name (setting names, not secrets: hence the noqa).
TOKEN_FILE = "BRIDGE_KAFKA__SASL_OAUTH_TOKEN_FILE"  # noqa: S105
ENDPOINT_URL = "BRIDGE_KAFKA__SASL_OAUTH_TOKEN_ENDPOINT_URL"
CLIENT_ID = "BRIDGE_KAFKA__SASL_OAUTH_CLIENT_ID"
CLIENT_SECRET = "BRIDGE_KAFKA__SASL_OAUTH_CLIENT_SECRET"  # noqa: S105
SCOPE = "BRIDGE_KAFKA__SASL_OAUTH_SCOPE"
# Kafka's sasl.login.refresh.window.factor default: refresh once 80% of the lifetime is gone.
REFRESH_FACTOR = 0.8
# A failed refresh while the cached token still works is retried on a later call, no sooner.
RETRY_INTERVAL_S = 5.0


class OAuthTokenError(KafkaConnectionError):  # type: ignore[misc] # untyped base
    """No token can be had; the message names the setting to fix (never the secret or token).

    A ``KafkaConnectionError`` because aiokafka catches only Kafka, OS and timeout errors
    around a new connection: anything else raised from ``token()`` on a reconnect would end
    its metadata task for good, where this is logged and retried like an unreachable broker.
    """


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (signature not checked: the broker does that), else None."""
    parts = token.split(".")
    if len(parts) != 3:  # an opaque token (or a 5-part JWE) has no expiry we can read
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


class FileTokenProvider(AbstractTokenProvider):  # type: ignore[misc] # untyped base
    """The token in a file that something else keeps fresh (a Kubernetes projected token)."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._clock = clock
        self._stamp: tuple[int, int, int, int] | None = None
        self._token = ""
        self._expires_at: float | None = None

    async def token(self) -> str:
        # Kubernetes swaps the ..data symlink to a new directory, so the path is stat'ed
        # (following links) on every call; a stat is far cheaper than a connection.
        try:
            stamp = _stamp(os.stat(self._path))
        except OSError as exc:
            raise self._error(f"cannot read {self._path}: {exc.strerror}") from exc
        if stamp != self._stamp or self._expired():
            self._read()
        if self._expired():
            raise self._error(f"the token in {self._path} has expired; is anything renewing it?")
        return self._token

    def _expired(self) -> bool:
        return self._expires_at is not None and self._clock() >= self._expires_at

    def _read(self) -> None:
        # A few hundred bytes on a local or tmpfs volume: a blocking read costs less than a
        # thread hop. The stamp comes from the open file, so it matches what was read even
        # if the path is swapped again meanwhile (the next call then sees a new stamp).
        try:
            with open(self._path, "rb") as file:
                stamp = _stamp(os.fstat(file.fileno()))
                text = file.read().decode("utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise self._error(f"cannot read {self._path}: {exc}") from exc
        if not text:
            raise self._error(f"{self._path} is empty")
        if any(c.isspace() or c == "\x01" for c in text):
            raise self._error(f"{self._path} holds more than one token (whitespace inside)")
        self._stamp, self._token, self._expires_at = stamp, text, jwt_expiry(text)

    def _error(self, what: str) -> OAuthTokenError:
        return OAuthTokenError(f"Kafka OAUTHBEARER token file: {what}; check {TOKEN_FILE}")


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _form_encode(value: str) -> str:
    # Form-urlencoded as Java's URLEncoder (so Kafka) does it: '*' stays, '~' does not.
    return quote_plus(value, safe="*").replace("~", "%7E")


class ClientCredentialsTokenProvider(AbstractTokenProvider):  # type: ignore[misc] # untyped base
    """Tokens from an OAuth 2.0 client-credentials grant (RFC 6749 section 4.4), cached."""

    def __init__(
        self,
        url: str,
        client_id: str,
        client_secret: str,
        scope: str | None = None,
        *,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = url
        self._secret = client_secret  # kept only to scrub it from error messages
        basic = f"{_form_encode(client_id)}:{_form_encode(client_secret)}".encode()
        self._authorization = "Basic " + base64.b64encode(basic).decode("ascii")
        self._form = {"grant_type": "client_credentials"} | ({"scope": scope} if scope else {})
        self._timeout_s = timeout_s
        self._transport = transport
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token = ""
        self._expires_at = self._refresh_at = self._retry_at = 0.0

    async def token(self) -> str:
        now = self._clock()
        # While a refresh is under way, a token that still works need not wait for it.
        if self._token and (
            now < self._refresh_at or (self._lock.locked() and now < self._expires_at)
        ):
            return self._token
        # One request for all the connections opened at once; the others wait and reuse it.
        async with self._lock:
            now = self._clock()
            valid = bool(self._token) and now < self._expires_at
            if valid and (now < self._refresh_at or now < self._retry_at):
                return self._token
            try:
                token, lifetime = await self._fetch()
            except OAuthTokenError as exc:
                if not valid:
                    raise
                self._retry_at = self._clock() + RETRY_INTERVAL_S
                left = round(self._expires_at - now)
                log.warning("kafka_oauth_refresh_failed", error=str(exc), token_valid_for_s=left)
                return self._token
            # Lifetimes count from before the request: the token cannot have been issued earlier.
            self._token, self._expires_at = token, now + lifetime
            self._refresh_at = now + REFRESH_FACTOR * lifetime
            return token

    async def _fetch(self) -> tuple[str, float]:
        # A client per request: refreshes are far apart, so nothing stays open in between.
        try:
            async with httpx.AsyncClient(
                transport=_Borrowed(self._transport) if self._transport else None,
                timeout=self._timeout_s,
            ) as client:
                response = await client.post(
                    self._url,
                    data=self._form,
                    headers={"Authorization": self._authorization, "Accept": "application/json"},
                )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            timed_out = isinstance(exc, httpx.TimeoutException)
            why = f"no answer in {self._timeout_s:g}s" if timed_out else f"unreachable ({exc!r})"
            raise self._error(f"{why}; check {ENDPOINT_URL}") from exc
        body = _json_object(response)
        if response.status_code != 200:
            raise self._error(_refusal(response.status_code, body))
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise self._error(f"HTTP 200 without an access_token; check {ENDPOINT_URL}")
        lifetime = _seconds(body.get("expires_in"))
        if lifetime is None and (exp := jwt_expiry(token)) is not None:
            lifetime = exp - self._clock()
        if lifetime is None or lifetime <= 0:
            why = "no future expires_in nor JWT exp, so no time to refresh it"
            raise self._error(f"{why}; check {ENDPOINT_URL}")
        return token, lifetime

    def _error(self, what: str) -> OAuthTokenError:
        message = f"Kafka OAUTHBEARER token endpoint {self._url}: {what}"
        # The endpoint's own words are quoted; should one ever echo the secret, it goes.
        return OAuthTokenError(message.replace(self._secret, "***") if self._secret else message)


class _Borrowed(httpx.AsyncBaseTransport):
    """A caller's transport, lent to each short-lived client: closing the client leaves it open."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._inner.handle_async_request(request)


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    return body if isinstance(body, dict) else {}


def _seconds(value: object) -> float | None:
    # A number by RFC 6749; some providers send a string. NaN or infinity is no lifetime.
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        with contextlib.suppress(ValueError):
            if math.isfinite(seconds := float(value)):
                return seconds
    return None


def _refusal(status: int, body: dict[str, Any]) -> str:
    # Cut short: an error page is no message.
    error = str(body.get("error", ""))[:100]
    description = str(body.get("error_description", ""))[:300]
    said = f"HTTP {status}" + (f" {error}" if error else "")
    said += f" ({description})" if description else ""
    if error == "invalid_client" or status == 401:
        return f"{said}; check {CLIENT_ID} / {CLIENT_SECRET}"
    if error == "invalid_scope":
        return f"{said}; check {SCOPE}"
    if error == "unauthorized_client":
        return f"{said}; the identity provider must allow this client client_credentials"
    return f"{said}; check {ENDPOINT_URL}"
