"""structlog, configured once at start: JSON lines off a terminal, readable on one.

Every line goes to stdout and carries ``event``, ``level``, ``timestamp``, ``logger``
(the module that logged it) and ``service_version`` (the bridge's; ``version`` is
the model version in the lines that name one). The standard library's
records (aiokafka's, asyncio's) go through the same processors and renderer, so a
log shipper reads one format from one stream.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from bridge.version import installed_version

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _JsonLines(structlog.BytesLogger):
    """structlog's bytes logger, with the name ``get_logger(__name__)`` was given."""

    __slots__ = ("logger_name",)
    logger_name: str | None


class _ConsoleLines(structlog.PrintLogger):
    logger_name: str | None


def _named(make: Callable[[], _JsonLines | _ConsoleLines]) -> Callable[..., Any]:
    def factory(*args: Any) -> _JsonLines | _ConsoleLines:
        logger = make()
        logger.logger_name = str(args[0]) if args else None
        return logger

    return factory


def _add_logger_name(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")  # set for standard-library records
    event_dict["logger"] = (
        record.name if record is not None else getattr(logger, "logger_name", None)
    )
    return event_dict


def _add_version(version: str) -> Processor:
    def add(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        event_dict["service_version"] = version
        return event_dict

    return add


def _json_text(obj: Any, **_: Any) -> str:
    # The standard library's formatter must return text; structlog's own lines stay bytes.
    return orjson.dumps(obj).decode()


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    shared: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_logger_name,
        _add_version(installed_version()),
    ]
    if as_json:
        processors: list[Processor] = [
            *shared,
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ]
        factory = _named(lambda: _JsonLines(out.buffer))
        foreign: list[Processor] = [
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(_json_text),
        ]
    else:
        console = structlog.dev.ConsoleRenderer()
        processors = [*shared, console]
        factory = _named(lambda: _ConsoleLines(out))
        foreign = [console]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *foreign],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # aiokafka's info and debug records are per request and connection: keep its
    # warnings and errors (and asyncio's), at BRIDGE_LOG__LEVEL when that is stricter.
    root.setLevel(max(logging.WARNING, _LEVELS[level]))
