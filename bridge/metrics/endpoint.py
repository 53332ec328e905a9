"""``GET /metrics`` on ``BRIDGE_METRICS__PORT``: an asyncio responder, one request a connection.

It also answers the health probes' paths (``/livez``, ``/readyz``): what they check
is the caller's (``bridge.probes``); here a page is a function that says whether it
passed and gives a JSON body, answered 200 or 503.

Not ``prometheus_client.start_http_server``: its thread would read the bridge's
live state (ledgers, commit counts) while the event loop changes it, and it
serves the metrics on every path. Here a scrape runs on the loop, between two
steps of the pipeline; ``close`` ends the listener and any request in flight, so
nothing holds the port once the bridge stops.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus

import structlog

from bridge.metrics.collectors import Metrics

log = structlog.get_logger(__name__)

HEAD_LIMIT = 16 * 1024  # a scraper's request line and headers take a few hundred bytes
READ_TIMEOUT_S = 5.0
# After refusing a request whose head is too large, what the client is still
# sending is read and dropped for a while: closing with unread bytes resets the
# connection, and the client might lose the answer.
DISCARD_BYTES = 1024 * 1024
DISCARD_S = 1.0

Page = Callable[[], tuple[bool, bytes]]  # passed, and the JSON body


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # without the query
    accept: str


def parse_request(head: bytes) -> Request | None:
    """The request line and the Accept header of an HTTP/1.x head, or None if malformed."""
    request_line, *header_lines = head.decode("latin-1").removesuffix("\r\n\r\n").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith("HTTP/1."):
        return None
    method, target, _ = parts
    if not target.startswith("/"):
        return None
    accept = ""
    for line in header_lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            return None
        if name.lower() == "accept":
            accept = value.strip()
    return Request(method, target.split("?", 1)[0], accept)


class MetricsServer:
    def __init__(self, metrics: Metrics, pages: Mapping[str, Page] | None = None) -> None:
        self._metrics = metrics
        self._pages = dict(pages or {})
        self._server: asyncio.Server | None = None
        self._answering: set[asyncio.Task[object]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None  # noqa: S101 - only asked after start
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, host, port, limit=HEAD_LIMIT)

    async def close(self) -> None:
        """Stop listening and drop the requests in flight (a scrape may be retried)."""
        if self._server is None:
            return
        self._server.close()
        for task in self._answering:
            task.cancel()
        await asyncio.gather(*self._answering, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - start_server runs each handler in a task
        self._answering.add(task)
        try:
            with contextlib.suppress(ConnectionError):
                await self._answer(reader, writer)
        finally:
            self._answering.discard(task)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
        except asyncio.LimitOverrunError:
            await _reply(writer, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, b"header too large\n")
            await _discard(reader)
            return
        except (asyncio.IncompleteReadError, TimeoutError):
            return  # the client left or stalled: nobody to answer
        request = parse_request(head)
        if request is None:
            await _reply(writer, HTTPStatus.BAD_REQUEST, b"bad request\n")
        elif request.method not in ("GET", "HEAD"):
            await _reply(writer, HTTPStatus.METHOD_NOT_ALLOWED, b"GET only\n", allow="GET, HEAD")
        elif (page := self._pages.get(request.path)) is not None:
            await self._answer_page(writer, page, head_only=request.method == "HEAD")
        elif request.path != "/metrics":
            await _reply(writer, HTTPStatus.NOT_FOUND, b"not found\n")
        else:
            try:
                body, content_type = self._metrics.exposition(request.accept)
            except Exception:  # a live read's bug: log it, answer, keep serving
                log.exception("metrics_unreadable")
                await _reply(writer, HTTPStatus.INTERNAL_SERVER_ERROR, b"metrics unreadable\n")
                return
            head_only = request.method == "HEAD"
            await _reply(writer, HTTPStatus.OK, body, content_type, head_only=head_only)

    async def _answer_page(
        self, writer: asyncio.StreamWriter, page: Page, *, head_only: bool
    ) -> None:
        try:
            passed, body = page()
        except Exception:  # a check's bug: a probe that cannot tell fails, the server goes on
            log.exception("probe_unreadable")
            await _reply(writer, HTTPStatus.INTERNAL_SERVER_ERROR, b"probe unreadable\n")
            return
        status = HTTPStatus.OK if passed else HTTPStatus.SERVICE_UNAVAILABLE
        await _reply(writer, status, body, "application/json", head_only=head_only)


async def serve_metrics(
    metrics: Metrics, host: str, port: int, pages: Mapping[str, Page] | None = None
) -> MetricsServer:
    """Listen for scrapes (and the ``pages``' probes) until ``close()``."""
    server = MetricsServer(metrics, pages)
    await server.start(host, port)
    log.info("metrics_listening", host=host, port=server.port)
    return server


async def _reply(
    writer: asyncio.StreamWriter,
    status: HTTPStatus,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    *,
    allow: str | None = None,
    head_only: bool = False,
) -> None:
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if allow is not None:
        lines.append(f"Allow: {allow}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if not head_only:
        writer.write(body)
    await writer.drain()


async def _discard(reader: asyncio.StreamReader) -> None:
    async def drop() -> None:
        left = DISCARD_BYTES
        while left > 0 and (chunk := await reader.read(min(left, 64 * 1024))):
            left -= len(chunk)

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(drop(), DISCARD_S)
